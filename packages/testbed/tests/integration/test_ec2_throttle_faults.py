"""Throttling, latency and error injection, and the call log (boto3 against the testbed)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from vpccni.testbed.cloud import Cloud, CloudConfig

NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def outcomes_of(call: Callable[[], object], times: int) -> list[tuple[str, int]]:
    """("ok" or the EC2 error code, HTTP status) of each of `times` calls."""
    out = []
    for _ in range(times):
        try:
            call()
            out.append(("ok", 200))
        except ClientError as exc:
            out.append((exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]))
    return out


def test_throttling_returns_request_limit_exceeded_then_refills(cloud: Cloud) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    cloud.set_throttle("non-mutating", capacity=2, refill_per_s=1.0)
    cloud.set_throttle("mutating", capacity=1000, refill_per_s=1000.0)
    outcomes = outcomes_of(ec2.describe_subnets, 3)
    assert outcomes[:2] == [("ok", 200), ("ok", 200)] and ("RequestLimitExceeded", 503) in outcomes
    ec2.create_tags(Resources=[cloud.vpc_id], Tags=[{"Key": "k", "Value": "v"}])  # other bucket unaffected
    time.sleep(1.05)  # one token per second: one is back
    ec2.describe_subnets()
    codes = [r.error_code for r in cloud.call_log if r.action == "DescribeSubnets"]
    assert codes.count("RequestLimitExceeded") == outcomes.count(("RequestLimitExceeded", 503))


def test_injected_latency_is_observed(cloud: Cloud) -> None:
    ec2 = cloud.ec2_client()
    cloud.set_latency("DescribeVpcs", 0.3)
    t0 = time.monotonic()
    ec2.describe_vpcs()
    assert time.monotonic() - t0 >= 0.3
    record = [r for r in cloud.call_log if r.action == "DescribeVpcs"][-1]
    assert record.duration >= 0.3 and record.error_code is None


def test_injected_error_is_returned_count_times(cloud: Cloud) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    cloud.inject_error("CreateNetworkInterface", "InsufficientFreeAddressesInSubnet", count=1)
    with pytest.raises(ClientError) as exc:
        ec2.create_network_interface(SubnetId=cloud.subnet_ids[0])
    assert exc.value.response["Error"]["Code"] == "InsufficientFreeAddressesInSubnet"
    ec2.create_network_interface(SubnetId=cloud.subnet_ids[0])
    log = [(r.action, r.error_code) for r in cloud.call_log if r.action == "CreateNetworkInterface"]
    assert log == [
        ("CreateNetworkInterface", "InsufficientFreeAddressesInSubnet"),
        ("CreateNetworkInterface", None),
    ]
    assert (
        next(r for r in cloud.call_log if r.action == "CreateNetworkInterface").params["SubnetId"]
        == cloud.subnet_ids[0]
    )


def test_control_endpoint_changes_a_running_testbed(cloud: Cloud) -> None:
    def post(body: dict[str, object]) -> dict[str, object]:
        req = urllib.request.Request(cloud.control_endpoint, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req) as resp:
            return dict(json.loads(resp.read()))

    assert post({"op": "inject_error", "action": "DescribeVpcs", "code": "UnauthorizedOperation"}) == {
        "ok": True
    }
    with pytest.raises(ClientError) as exc:
        cloud.ec2_client(config=NO_RETRY).describe_vpcs()
    assert exc.value.response["Error"]["Code"] == "UnauthorizedOperation"
    calls = post({"op": "call_log"})["calls"]
    assert isinstance(calls, list) and calls[-1]["error_code"] == "UnauthorizedOperation"
    with pytest.raises(urllib.error.HTTPError) as bad:
        post({"op": "nope"})
    assert bad.value.code == 400


PER_RUN = CloudConfig(
    latency={"DescribeSubnets": 0.2}, throttle={}, errors={"DescribeVpcs": ("InternalError", 2)}
)


@pytest.mark.parametrize("cloud_config", [PER_RUN])
def test_latency_errors_and_throttling_set_per_run(cloud: Cloud) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    for _ in range(3):
        ec2.describe_subnets()
    records = [r for r in cloud.call_log if r.action == "DescribeSubnets"]
    assert len(records) == 3 and all(r.duration >= 0.2 and r.error_code is None for r in records)
    assert outcomes_of(ec2.describe_vpcs, 3) == [("InternalError", 500), ("InternalError", 500), ("ok", 200)]


def test_testbeds_in_one_process_do_not_share_state(cloud: Cloud) -> None:
    with Cloud(CloudConfig()) as other:
        mine = {v["VpcId"] for v in cloud.ec2_client().describe_vpcs()["Vpcs"]}
        theirs = {v["VpcId"] for v in other.ec2_client().describe_vpcs()["Vpcs"]}
        assert cloud.vpc_id in mine and other.vpc_id in theirs
        assert cloud.vpc_id not in theirs and other.vpc_id not in mine
