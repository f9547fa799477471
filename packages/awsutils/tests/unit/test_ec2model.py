"""The trimmed EC2 model: it covers every call the adapter makes, and requests, responses and endpoints are
the same as with botocore's full model."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.model import ServiceModel, Shape
from botocore.serialize import create_serializer
from vpccni.awsutils import ec2api
from vpccni.awsutils.ec2api import Boto3EC2Api, Ec2ClientConfig, make_boto3_client
from vpccni.awsutils.ec2model import (
    DATA_DIR,
    EC2_API_VERSION,
    EC2_OPERATIONS,
    ENDPOINT_SERVICES,
    trimmed_session,
)

REGION = "us-west-2"

# One request per operation, with the parameters the adapter and EniManager send.
REQUESTS: dict[str, dict[str, Any]] = {
    "AssignIpv6Addresses": {"NetworkInterfaceId": "eni-1", "Ipv6PrefixCount": 1},
    "AssignPrivateIpAddresses": {"NetworkInterfaceId": "eni-1", "SecondaryPrivateIpAddressCount": 9},
    "AttachNetworkInterface": {
        "NetworkInterfaceId": "eni-1",
        "InstanceId": "i-1",
        "DeviceIndex": 2,
        "NetworkCardIndex": 0,
    },
    "CreateNetworkInterface": {
        "SubnetId": "subnet-1",
        "Description": "aws-K8S-i-1",
        "Groups": ["sg-1", "sg-2"],
        "Ipv4PrefixCount": 1,
        "TagSpecifications": [
            {
                "ResourceType": "network-interface",
                "Tags": [{"Key": "node.k8s.amazonaws.com/instance_id", "Value": "i-1"}],
            }
        ],
        "ConnectionTrackingSpecification": {"TcpEstablishedTimeout": 300},
    },
    "CreateTags": {"Resources": ["eni-1"], "Tags": [{"Key": "a", "Value": "b"}]},
    "DeleteNetworkInterface": {"NetworkInterfaceId": "eni-1"},
    "DescribeInstanceTypes": {"InstanceTypes": ["m5.large"]},
    "DescribeInstances": {"InstanceIds": ["i-1"]},
    "DescribeNetworkInterfaces": {
        "Filters": [{"Name": "tag-key", "Values": ["node.k8s.amazonaws.com/instance_id"]}],
        "MaxResults": 1000,
        "NextToken": "t",
    },
    "DescribeSubnets": {"Filters": [{"Name": "vpc-id", "Values": ["vpc-1"]}]},
    "DetachNetworkInterface": {"AttachmentId": "eni-attach-1"},
    "ModifyNetworkInterfaceAttribute": {
        "NetworkInterfaceId": "eni-1",
        "Attachment": {"AttachmentId": "eni-attach-1", "DeleteOnTermination": True},
        "Groups": ["sg-1"],
    },
    "UnassignIpv6Addresses": {"NetworkInterfaceId": "eni-1", "Ipv6Prefixes": ["2001:db8::/80"]},
    "UnassignPrivateIpAddresses": {
        "NetworkInterfaceId": "eni-1",
        "PrivateIpAddresses": ["10.0.0.5"],
        "Ipv4Prefixes": ["10.0.1.0/28"],
    },
}


def _full_model() -> ServiceModel:
    return ServiceModel(botocore.session.Session().get_service_data("ec2", EC2_API_VERSION), "ec2")


def _trimmed_model() -> ServiceModel:
    return ServiceModel(trimmed_session().get_service_data("ec2", EC2_API_VERSION), "ec2")


def _adapter_calls() -> set[str]:
    """The actions `Boto3EC2Api` passes to `self._call(...)`, read from its source."""
    tree = ast.parse(inspect.getsource(ec2api))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "_call"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def _walk(shape: Shape, seen: set[str]) -> None:
    if shape.name in seen:
        return
    seen.add(shape.name)
    for attr in ("member", "key", "value"):
        if hasattr(shape, attr):
            _walk(getattr(shape, attr), seen)
    for member in getattr(shape, "members", {}).values():
        _walk(member, seen)


def test_every_call_the_adapter_makes_is_in_the_trimmed_model() -> None:
    calls = _adapter_calls()
    assert len(calls) >= 14  # the parse found the calls (CreateTags spans lines)
    assert calls == set(EC2_OPERATIONS)
    assert set(_trimmed_model().operation_names) == set(EC2_OPERATIONS)
    assert set(REQUESTS) == set(EC2_OPERATIONS)


def test_the_trimmed_model_is_closed_and_keeps_every_shape_as_botocore_ships_it() -> None:
    trimmed, full = _trimmed_model(), _full_model()
    assert trimmed.metadata == full.metadata
    seen: set[str] = set()
    for name in EC2_OPERATIONS:
        op = trimmed.operation_model(name)
        assert op.http == full.operation_model(name).http
        for shape in (op.input_shape, op.output_shape):
            if shape is not None:
                _walk(shape, seen)  # raises if a reachable shape is missing
    assert seen == set(trimmed.shape_names)
    for name in seen:
        kept, whole = trimmed.shape_for(name), full.shape_for(name)
        assert (kept.type_name, kept.serialization, kept.metadata) == (
            whole.type_name,
            whole.serialization,
            whole.metadata,
        )
        assert list(getattr(kept, "members", {})) == list(getattr(whole, "members", {}))


@pytest.mark.parametrize("operation", EC2_OPERATIONS)
def test_requests_are_the_same_bytes_as_with_the_full_model(operation: str) -> None:
    serializer = create_serializer("ec2", include_validation=True)
    full = serializer.serialize_to_request(REQUESTS[operation], _full_model().operation_model(operation))
    trimmed = serializer.serialize_to_request(
        REQUESTS[operation], _trimmed_model().operation_model(operation)
    )
    assert trimmed == full
    assert full["body"]["Action"] == operation


@pytest.mark.parametrize(
    "region", ["us-west-2", "eu-central-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1", "mars-east-1"]
)
@pytest.mark.parametrize("service", ENDPOINT_SERVICES)
def test_endpoints_resolve_as_with_botocore_data(service: str, region: str) -> None:
    def endpoint(session: Any) -> tuple[str, str | None]:
        client = session.create_client(
            service, region_name=region, aws_access_key_id="x", aws_secret_access_key="y"
        )
        return client.meta.endpoint_url, client.meta.config.signature_version

    assert endpoint(trimmed_session()) == endpoint(botocore.session.Session())


def test_the_client_loads_the_trimmed_data_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    loader = trimmed_session().get_component("data_loader")
    assert loader.search_paths[:2] == [str(DATA_DIR), str(tmp_path)]
    client = make_boto3_client(Ec2ClientConfig(region=REGION))
    assert set(client.meta.service_model.operation_names) == set(EC2_OPERATIONS)
    # Other clients in the process keep botocore's full model.
    assert (
        len(boto3.session.Session().client("ec2", region_name=REGION).meta.service_model.operation_names)
        > 500
    )
    assert isinstance(loader, botocore.loaders.Loader)


def test_responses_parse_as_with_the_full_model(moto_ec2: Any) -> None:
    vpc = moto_ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = moto_ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    api = Boto3EC2Api(Ec2ClientConfig(region=REGION))
    created = api.create_network_interface(**{**REQUESTS["CreateNetworkInterface"], "SubnetId": subnet})
    del created["TagSet"]  # compared below through DescribeNetworkInterfaces
    api.assign_private_ip_addresses(eni_id=created["NetworkInterfaceId"], ip_count=3)
    ours = api.describe_network_interfaces(eni_ids=[created["NetworkInterfaceId"]])
    theirs = moto_ec2.describe_network_interfaces(NetworkInterfaceIds=[created["NetworkInterfaceId"]])
    assert ours == theirs["NetworkInterfaces"]
    assert len(ours[0]["PrivateIpAddresses"]) == 4
    assert (
        api.describe_subnets(filters=[{"Name": "vpc-id", "Values": [vpc]}])
        == moto_ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    )


def test_building_the_client_imports_neither_boto3_nor_the_full_model() -> None:
    """Checked in a fresh interpreter: this test process has boto3 loaded for moto."""
    code = (
        "import sys\n"
        "from vpccni.awsutils.ec2api import Ec2ClientConfig, make_boto3_client\n"
        "client = make_boto3_client(Ec2ClientConfig(region='us-west-2'))\n"
        "print(len(client.meta.service_model.operation_names), 'boto3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == [str(len(EC2_OPERATIONS)), "False"]
