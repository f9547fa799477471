"""The boto3 adapter against moto's in-process mock (no sockets): shapes, pagination, errors, observer."""

from __future__ import annotations

import random
from typing import Any

import pytest
from vpccni.awsutils.ec2api import Boto3EC2Api, Ec2ClientConfig, Ec2InstanceTypeSource, make_boto3_client
from vpccni.awsutils.errors import Ec2Error, EniNotFoundError, UnauthorizedOperationError
from vpccni.awsutils.errors import Ec2Error as InvalidSubnetError
from vpccni.awsutils.limits import LimitsCatalog
from vpccni.awsutils.ratelimit import Ec2RateLimiter, RateLimitConfig
from vpccni.awsutils.testing import FakeClock, RecordingObserver

REGION = "us-west-2"


def test_user_agent_names_the_upstream_version() -> None:
    cfg = Ec2ClientConfig(region=REGION, endpoint_url="http://127.0.0.1:5000", vpc_cni_version="v1.23.1")
    assert cfg.http_timeout_s == 10  # upstream's HTTP_TIMEOUT default
    assert (
        cfg.user_agent_extra().startswith("vpccni/")
        and "amazon-vpc-cni-k8s/v1.23.1" in cfg.user_agent_extra()
    )


def test_boto3_client_leaves_retries_to_the_adapter_and_sets_timeouts() -> None:
    client = make_boto3_client(Ec2ClientConfig(region=REGION, vpc_cni_version="v1.23.1"))
    config = client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert config.read_timeout == 10 and config.connect_timeout == 10
    assert "amazon-vpc-cni-k8s/v1.23.1" in config.user_agent_extra


def test_calls_are_observed_limited_and_errors_typed(moto_ec2: Any) -> None:
    vpc = moto_ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = moto_ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/28")["Subnet"]["SubnetId"]
    observer = RecordingObserver()
    clock = FakeClock()
    limiter = Ec2RateLimiter(
        RateLimitConfig(mutating_qps=1, mutating_burst=1), clock=clock, observer=observer
    )
    api = Boto3EC2Api(Ec2ClientConfig(region=REGION), limiter=limiter, observer=observer, clock=clock)
    eni = api.create_network_interface(SubnetId=subnet, Description="aws-K8S-i-1", Groups=[])
    api.create_tags(resources=[eni["NetworkInterfaceId"]], tags={"k": "v"})
    assert observer.throttle_waits == [("mutating", pytest.approx(1.0))]
    listed = api.describe_network_interfaces(filters=[{"Name": "tag-key", "Values": ["k"]}])
    assert [e["NetworkInterfaceId"] for e in listed] == [eni["NetworkInterfaceId"]]
    with pytest.raises(EniNotFoundError):
        api.describe_network_interfaces(eni_ids=["eni-12345678"])
    assert observer.apis() == [
        "CreateNetworkInterface",
        "CreateTags",
        "DescribeNetworkInterfaces",
        "DescribeNetworkInterfaces",
    ]
    assert [c[2] for c in observer.calls] == [None, None, None, "InvalidNetworkInterfaceID.NotFound"]
    with pytest.raises(InvalidSubnetError) as info:
        api.create_network_interface(SubnetId="subnet-0missing")
    assert info.value.code == "InvalidSubnetID.NotFound"


def test_describe_pages_through_next_token() -> None:
    # A stand-in boto3 client that pages: moto returns everything in one page.
    page_list: list[dict[str, Any]] = [
        {"NetworkInterfaces": [{"NetworkInterfaceId": "eni-a"}], "NextToken": "t1"},
        {"NetworkInterfaces": [{"NetworkInterfaceId": "eni-b"}]},
    ]
    pages = iter(page_list)
    seen: list[dict[str, Any]] = []

    class Paged:
        def describe_network_interfaces(self, **params: Any) -> dict[str, Any]:
            seen.append(params)
            return next(pages)

    api = Boto3EC2Api(Ec2ClientConfig(region=REGION), client_factory=lambda _cfg: Paged())
    got = api.describe_network_interfaces(filters=[{"Name": "status", "Values": ["available"]}])
    assert [e["NetworkInterfaceId"] for e in got] == ["eni-a", "eni-b"]
    assert seen[0]["MaxResults"] == 1000 and "NextToken" not in seen[0] and seen[1]["NextToken"] == "t1"


def test_instance_type_fallback_through_describe_instance_types(moto_ec2: Any) -> None:
    api = Boto3EC2Api(Ec2ClientConfig(region=REGION))
    record = Ec2InstanceTypeSource(api).describe_instance_type("m5.large")
    assert record is not None and record["NetworkInfo"]["MaximumNetworkInterfaces"] == 3
    assert Ec2InstanceTypeSource(api).describe_instance_type("zz.nope") is None
    assert LimitsCatalog(Ec2InstanceTypeSource(api)).get("m5.large").ipv4_per_eni == 10


class _Flaky:
    """A botocore client stand-in: CreateTags answers these error codes, in order, then succeeds."""

    def __init__(self, codes: list[str]) -> None:
        self.codes = codes
        self.calls = 0

    def create_tags(self, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        self.calls += 1
        if self.codes:
            code = self.codes.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": code}}, "CreateTags")
        return {}


def _api(client: _Flaky, clock: FakeClock, observer: RecordingObserver, attempts: int = 10) -> Boto3EC2Api:
    return Boto3EC2Api(
        Ec2ClientConfig(region=REGION, max_attempts=attempts),
        client_factory=lambda _: client,
        limiter=Ec2RateLimiter(RateLimitConfig(mutating_qps=5, mutating_burst=10), clock=clock),
        observer=observer,
        clock=clock,
        rng=random.Random(3),
    )


def test_throttled_attempts_are_retried_with_full_jitter_and_slow_the_action_down() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    client = _Flaky(["RequestLimitExceeded"] * 3)
    api = _api(client, clock, observer)
    api.create_tags(resources=["eni-1"], tags={"a": "b"})
    assert client.calls == 4
    assert [c[2] for c in observer.calls] == ["RequestLimitExceeded"] * 3 + [None]
    backoffs = [s for s in clock.sleeps if s not in observer_waits(observer)]
    caps = [0.5 * 2**n for n in (1, 2, 3)]
    assert len(backoffs) >= 3 and all(0 <= b <= cap for b, cap in zip(backoffs, caps, strict=False))
    # three throttles halved the node's CreateTags rate three times; the success gave a tenth back
    assert api._limiter.rate("CreateTags") == pytest.approx(5 / 8 + 0.5)
    assert api._limiter.rate("CreateNetworkInterface") == 5  # other actions keep their rate


def observer_waits(observer: RecordingObserver) -> list[float]:
    return [w for _, w in observer.throttle_waits]


def test_errors_a_retry_cannot_fix_are_not_retried_and_attempts_are_bounded() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    client = _Flaky(["UnauthorizedOperation", "RequestLimitExceeded"])
    with pytest.raises(UnauthorizedOperationError):
        _api(client, clock, observer).create_tags(resources=["eni-1"], tags={"a": "b"})
    assert client.calls == 1
    client = _Flaky(["InternalError"] * 5)
    with pytest.raises(Ec2Error):
        _api(client, clock, observer, attempts=3).create_tags(resources=["eni-1"], tags={"a": "b"})
    assert client.calls == 3
