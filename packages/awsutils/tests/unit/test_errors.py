from __future__ import annotations

import pytest
from vpccni.awsutils import errors as e


def _resp(code: str, message: str = "boom") -> dict[str, object]:
    return {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"RequestId": "req-1"}}


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("UnauthorizedOperation", e.UnauthorizedOperationError),
        ("InsufficientFreeAddressesInSubnet", e.InsufficientFreeAddressesError),
        ("InsufficientCidrBlocks", e.InsufficientCidrBlocksError),
        ("AttachmentLimitExceeded", e.AttachmentLimitExceededError),
        ("PrivateIpAddressLimitExceeded", e.PrivateIpAddressLimitExceededError),
        ("InvalidNetworkInterfaceID.NotFound", e.EniNotFoundError),
        ("RequestLimitExceeded", e.ThrottledError),
        ("InternalError", e.Ec2Error),
    ],
)
def test_codes_map_to_distinct_types(code: str, kind: type[e.Ec2Error]) -> None:
    err = e.error_from_response("AssignPrivateIpAddresses", _resp(code))
    assert type(err) is kind
    assert (err.api, err.code, err.request_id) == ("AssignPrivateIpAddresses", code, "req-1")


def test_unauthorized_names_the_missing_iam_action() -> None:
    err = e.error_from_response("AssignPrivateIpAddresses", _resp("UnauthorizedOperation"))
    assert isinstance(err, e.UnauthorizedOperationError)
    assert err.iam_action == "ec2:AssignPrivateIpAddresses"
    assert "add ec2:AssignPrivateIpAddresses to the node's IAM role" in str(err)


def test_subnet_exhaustion_names_the_subnet_and_the_fix() -> None:
    err = e.error_from_response(
        "CreateNetworkInterface", _resp("InsufficientCidrBlocks"), subnet_id="subnet-0abc"
    )
    assert isinstance(err, e.SubnetExhaustedError) and err.subnet_id == "subnet-0abc"
    assert "subnet-0abc has no free contiguous /28" in str(err) and "cidr-reservation" in str(err)
    err2 = e.error_from_response(
        "CreateNetworkInterface", _resp("InsufficientFreeAddressesInSubnet"), subnet_id="subnet-0def"
    )
    assert "subnet-0def has no free IPv4 addresses" in str(err2) and "kubernetes.io/role/cni" in str(err2)


def test_throttled_error_suggests_what_to_change() -> None:
    err = e.error_from_response("CreateTags", _resp("RequestLimitExceeded"))
    assert "VPCCNI_EC2_MUTATING_QPS" in str(err)
