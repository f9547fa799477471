"""Typed errors for EC2 and IMDS failures, each telling the user what to do about it.

ipamd branches on these types (never on message text): subnet exhaustion pauses allocation for 120 s, a
per-ENI address limit triggers a resync from EC2, a missing IAM permission raises a Kubernetes event.
"""

from __future__ import annotations

from typing import Any

# Error codes EC2 uses for "this ENI no longer exists"; treated as success when freeing.
ENI_NOT_FOUND_CODES = frozenset({"InvalidNetworkInterfaceID.NotFound", "InvalidNetworkInterfaceId.NotFound"})
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled"})

# Which IAM action each EC2 API needs (for UnauthorizedOperation messages).
IAM_ACTION = {
    "AssignIpv6Addresses": "ec2:AssignIpv6Addresses",
    "AssignPrivateIpAddresses": "ec2:AssignPrivateIpAddresses",
    "AttachNetworkInterface": "ec2:AttachNetworkInterface",
    "CreateNetworkInterface": "ec2:CreateNetworkInterface",
    "CreateTags": "ec2:CreateTags",
    "DeleteNetworkInterface": "ec2:DeleteNetworkInterface",
    "DescribeInstanceTypes": "ec2:DescribeInstanceTypes",
    "DescribeInstances": "ec2:DescribeInstances",
    "DescribeNetworkInterfaces": "ec2:DescribeNetworkInterfaces",
    "DescribeSubnets": "ec2:DescribeSubnets",
    "DetachNetworkInterface": "ec2:DetachNetworkInterface",
    "ModifyNetworkInterfaceAttribute": "ec2:ModifyNetworkInterfaceAttribute",
    "UnassignIpv6Addresses": "ec2:UnassignIpv6Addresses",
    "UnassignPrivateIpAddresses": "ec2:UnassignPrivateIpAddresses",
}


class AwsUtilsError(Exception):
    """Base of every error raised by vpccni.awsutils."""


class ImdsError(AwsUtilsError):
    """The instance metadata service could not be read."""


class ImdsNotFoundError(ImdsError):
    """IMDS answered 404 for a path (list keys treat this as empty)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"IMDS has no {path!r}")
        self.path = path


class ImdsUnavailableError(ImdsError):
    """IMDS did not answer (timeouts, connection refused, 5xx) after retries."""


class ImdsStaleError(ImdsError):
    """IMDS does not show yet what EC2 already did (IMDS lags EC2 by seconds, sometimes longer)."""


class UnknownInstanceTypeError(AwsUtilsError):
    """Neither the static table nor DescribeInstanceTypes knows the instance type."""

    def __init__(self, instance_type: str, cause: str = "") -> None:
        msg = (
            f"vpc ip resource(eni ip limit): unknown instance type {instance_type!r}; allow "
            "ec2:DescribeInstanceTypes in the node role so limits can be looked up at runtime"
        )
        super().__init__(f"{msg} ({cause})" if cause else msg)
        self.instance_type = instance_type


class Ec2Error(AwsUtilsError):
    """An EC2 API call failed; ``api`` is the action, ``code`` EC2's error code."""

    def __init__(self, message: str, *, api: str, code: str, request_id: str = "") -> None:
        super().__init__(message)
        self.api = api
        self.code = code
        self.request_id = request_id


class UnauthorizedOperationError(Ec2Error):
    """The node role lacks an IAM permission (upstream raises a MissingIAMPermissions event)."""

    @property
    def iam_action(self) -> str:
        return IAM_ACTION.get(self.api, f"ec2:{self.api}")


class SubnetExhaustedError(Ec2Error):
    """InsufficientFreeAddressesInSubnet or InsufficientCidrBlocks: ipamd rests that subnet for a while.

    `subnet_ids`: every subnet the call found full (a new ENI tries each candidate subnet in turn)."""

    def __init__(
        self, message: str, *, api: str, code: str, request_id: str = "", subnet_id: str = "",
        subnet_ids: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        super().__init__(message, api=api, code=code, request_id=request_id)
        self.subnet_id = subnet_id
        self.subnet_ids = subnet_ids or ((subnet_id,) if subnet_id else ())


class InsufficientFreeAddressesError(SubnetExhaustedError):
    """The subnet has no free IPv4 addresses left."""


class InsufficientCidrBlocksError(SubnetExhaustedError):
    """The subnet has no free contiguous /28 for a prefix (usually fragmentation)."""


class AttachmentLimitExceededError(Ec2Error):
    """The instance already has its maximum number of ENIs."""


class PrivateIpAddressLimitExceededError(Ec2Error):
    """The ENI already holds its maximum number of addresses or prefixes: resync from EC2."""


class EniNotFoundError(Ec2Error):
    """The ENI does not exist (any more)."""


class ThrottledError(Ec2Error):
    """EC2 kept answering RequestLimitExceeded after every retry."""


def _hint(api: str, code: str, subnet_id: str) -> str:
    subnet = subnet_id or "the ENI's subnet"
    if code == "UnauthorizedOperation":
        return f"add {IAM_ACTION.get(api, 'ec2:' + api)} to the node's IAM role (see docs/iam-policy.md)"
    if code == "InsufficientFreeAddressesInSubnet":
        return (
            f"{subnet} has no free IPv4 addresses: add a subnet tagged kubernetes.io/role/cni=1 in this AZ, "
            "use a larger subnet, or lower WARM_IP_TARGET/WARM_ENI_TARGET"
        )
    if code == "InsufficientCidrBlocks":
        return (
            f"{subnet} has no free contiguous /28 for a prefix: reserve prefix space with a subnet CIDR "
            "reservation (ec2 create-subnet-cidr-reservation --reservation-type prefix), use a larger "
            "subnet, "
            "or disable ENABLE_PREFIX_DELEGATION"
        )
    if code == "AttachmentLimitExceeded":
        return (
            "the instance has its maximum number of ENIs: lower MAX_ENI/WARM_ENI_TARGET or use a larger type"
        )
    if code == "PrivateIpAddressLimitExceeded":
        return "the ENI holds its maximum number of addresses; ipamd resyncs its view from EC2"
    if code in THROTTLE_CODES:
        return (
            "EC2 throttled this account after every retry: lower VPCCNI_EC2_MUTATING_QPS or "
            "VPCCNI_EC2_READ_QPS, "
            "avoid WARM_IP_TARGET on large clusters, or use prefix delegation"
        )
    return ""


def error_from_response(api: str, response: dict[str, Any], *, subnet_id: str = "") -> Ec2Error:
    """Map a botocore error response to the typed error ipamd can branch on."""
    err = response.get("Error", {}) or {}
    code = str(err.get("Code", "Unknown"))
    text = str(err.get("Message", ""))
    request_id = str(response.get("ResponseMetadata", {}).get("RequestId", ""))
    hint = _hint(api, code, subnet_id)
    message = f"{api} failed: {code}: {text}" + (f"; {hint}" if hint else "")
    kwargs: dict[str, Any] = {"api": api, "code": code, "request_id": request_id}
    if code == "UnauthorizedOperation":
        return UnauthorizedOperationError(message, **kwargs)
    if code == "InsufficientFreeAddressesInSubnet":
        return InsufficientFreeAddressesError(message, subnet_id=subnet_id, **kwargs)
    if code == "InsufficientCidrBlocks":
        return InsufficientCidrBlocksError(message, subnet_id=subnet_id, **kwargs)
    if code == "AttachmentLimitExceeded":
        return AttachmentLimitExceededError(message, **kwargs)
    if code == "PrivateIpAddressLimitExceeded":
        return PrivateIpAddressLimitExceededError(message, **kwargs)
    if code in ENI_NOT_FOUND_CODES:
        return EniNotFoundError(message, **kwargs)
    if code in THROTTLE_CODES:
        return ThrottledError(message, **kwargs)
    return Ec2Error(message, **kwargs)
