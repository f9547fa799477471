"""vpccni.awsutils against the real testbed: moto + fidelity layer over HTTP, and its IMDSv2 server."""

from __future__ import annotations

import time

import pytest
from vpccni.awsutils.clock import SystemClock
from vpccni.awsutils.ec2api import Boto3EC2Api, Ec2ClientConfig
from vpccni.awsutils.eni import EniManager
from vpccni.awsutils.errors import (
    AttachmentLimitExceededError,
    PrivateIpAddressLimitExceededError,
    ThrottledError,
)
from vpccni.awsutils.imds import ImdsConfig
from vpccni.awsutils.inventory import describe_attached_enis, wait_for_eni_in_imds
from vpccni.awsutils.leak import LeakSweeper
from vpccni.awsutils.limits import max_pods
from vpccni.awsutils.node import AwsConfig, AwsNode
from vpccni.awsutils.ratelimit import Ec2RateLimiter, RateLimitConfig
from vpccni.awsutils.tags import TagSettings
from vpccni.awsutils.testing import FakeClock, RecordingObserver
from vpccni.testbed.cloud import Cloud, InstanceInfo
from vpccni.testbed.imds.server import ImdsServer


def _connect(
    cloud: Cloud, imds: ImdsServer, observer: RecordingObserver, *, cluster_name: str = ""
) -> AwsNode:
    config = AwsConfig(
        imds=ImdsConfig(endpoint=imds.endpoint),
        ec2_endpoint_url=cloud.ec2_endpoint,
        tags=TagSettings(cluster_name=cluster_name),
    )
    node = AwsNode.connect(config=config, observer=observer)
    node.enis.free_wait_s = 0.05  # the testbed detaches instantly; keep the suite fast
    return node


def _attached(cloud: Cloud, instance_id: str) -> set[str]:
    out = cloud.ec2_client().describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )
    return {e["NetworkInterfaceId"] for e in out["NetworkInterfaces"]}


def _freeze_imds(cloud: Cloud, lag_s: float = 1.5) -> None:
    """From now on IMDS answers with the state of ``lag_s`` ago: wait so that state is the current one."""
    time.sleep(lag_s + 0.5)
    cloud.set_imds_lag(lag_s)


def _all_enis(cloud: Cloud) -> set[str]:
    return {
        e["NetworkInterfaceId"] for e in cloud.ec2_client().describe_network_interfaces()["NetworkInterfaces"]
    }


def test_identity_limits_and_eni_lifecycle(cloud: Cloud, instance: InstanceInfo, imds: ImdsServer) -> None:
    observer = RecordingObserver()
    node = _connect(cloud, imds, observer, cluster_name="tb")
    ident = node.identity
    assert (ident.instance_id, ident.instance_type, ident.primary_eni_id) == (
        instance.instance_id,
        "m5.large",
        instance.primary_eni_id,
    )
    assert ident.primary_ipv4 == instance.primary_ip and ident.subnet_id == instance.subnet_id
    assert ident.availability_zone == instance.availability_zone and ident.vpc_id == cloud.vpc_id
    assert ident.security_groups == (cloud.security_group_id,)
    assert max_pods(node.instance_limits()) == 29

    subnets = node.candidate_subnets()
    assert subnets[-1] == instance.subnet_id and len(subnets) == 2  # the tagged subnet has more room
    eni = node.enis.allocate_eni(subnet_ids=subnets, security_groups=ident.security_groups, ip_count=9)
    assert eni.subnet_id == subnets[0] and len(eni.secondary_ipv4s) == 9
    primary, secondaries, _, _ = cloud.eni_addresses(eni.eni_id)
    assert primary == eni.primary_ipv4 and set(secondaries) == set(eni.secondary_ipv4s)

    enis = describe_attached_enis(node.metadata, node.enis)
    assert [e.eni_id for e in enis] == [instance.primary_eni_id, eni.eni_id]
    assert enis[1].metadata.device_number == eni.device_index == 1
    assert enis[1].tags["cluster.k8s.amazonaws.com/name"] == "tb"

    node.enis.free_eni(eni.eni_id)
    assert eni.eni_id not in _all_enis(cloud)
    # Every call was observed with upstream's API names.
    apis = set(observer.apis())
    assert {
        "GetMetadata",
        "DescribeSubnets",
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
    } <= apis


def test_testbed_limits_surface_as_typed_errors(
    cloud: Cloud, instance: InstanceInfo, imds: ImdsServer
) -> None:
    node = _connect(cloud, imds, RecordingObserver())
    sgs = node.identity.security_groups
    first = node.enis.allocate_eni(subnet_ids=[instance.subnet_id], security_groups=sgs, ip_count=9)
    with pytest.raises(PrivateIpAddressLimitExceededError):
        node.enis.assign_ipv4s(first.eni_id, 1)  # m5.large: 10 addresses per ENI
    node.enis.allocate_eni(subnet_ids=[instance.subnet_id], security_groups=sgs)
    before = _all_enis(cloud)
    with pytest.raises(AttachmentLimitExceededError):  # the fourth ENI on a 3-ENI type
        node.enis.allocate_eni(subnet_ids=[instance.subnet_id], security_groups=sgs)
    assert _all_enis(cloud) == before  # the created ENI was deleted again
    assert len(_attached(cloud, instance.instance_id)) == 3


def test_prefix_delegation(cloud: Cloud, instance: InstanceInfo, imds: ImdsServer) -> None:
    node = _connect(cloud, imds, RecordingObserver())
    eni = node.enis.allocate_eni(
        subnet_ids=[instance.subnet_id], security_groups=node.identity.security_groups, prefix_count=2
    )
    assert len(eni.ipv4_prefixes) == 2 and all(p.prefixlen == 28 for p in eni.ipv4_prefixes)
    more = node.enis.assign_prefixes(eni.eni_id, 3)
    _, _, prefixes, _ = cloud.eni_addresses(eni.eni_id)
    assert set(prefixes) == set(eni.ipv4_prefixes) | set(more)
    node.enis.unassign_prefixes(eni.eni_id, more[:1])
    _, _, prefixes, _ = cloud.eni_addresses(eni.eni_id)
    assert more[0] not in prefixes
    # IMDS shows the prefixes too once it catches up.
    listed = {e.eni_id: e for e in node.metadata.attached_enis()}
    assert set(listed[eni.eni_id].ipv4_prefixes) == set(prefixes)


def test_attach_failure_after_create_leaks_nothing(
    cloud: Cloud, instance: InstanceInfo, imds: ImdsServer
) -> None:
    node = _connect(cloud, imds, RecordingObserver())
    before = _all_enis(cloud)
    cloud.inject_error("AttachNetworkInterface", "InvalidParameterCombination", count=1)
    with pytest.raises(Exception, match="AttachNetworkInterface"):
        node.enis.allocate_eni(subnet_ids=[instance.subnet_id], security_groups=node.identity.security_groups)
    assert _all_enis(cloud) == before
    assert "DeleteNetworkInterface" in [r.action for r in cloud.call_log]


def test_throttled_calls_are_retried_and_succeed(
    cloud: Cloud, instance: InstanceInfo, imds: ImdsServer
) -> None:
    observer = RecordingObserver()
    node = _connect(cloud, imds, observer)
    cloud.set_throttle("mutating", capacity=2, refill_per_s=4.0)
    eni = node.enis.allocate_eni(
        subnet_ids=[instance.subnet_id], security_groups=node.identity.security_groups
    )
    for _ in range(4):
        node.enis.assign_ipv4s(eni.eni_id, 1)
    assert any(r.error_code == "RequestLimitExceeded" for r in cloud.call_log)
    _, secondaries, _, _ = cloud.eni_addresses(eni.eni_id)
    assert len(secondaries) == 4
    # every attempt is seen (the rate limiter hears of each throttle), and every assignment got through
    outcomes = [c[2] for c in observer.calls if c[0] == "AssignPrivateIpAddresses"]
    assert outcomes.count(None) == 4 and set(outcomes) <= {None, "RequestLimitExceeded"}
    assert "RequestLimitExceeded" in [c[2] for c in observer.calls]


def test_throttled_after_every_retry_is_a_throttled_error(cloud: Cloud, instance: InstanceInfo) -> None:
    cloud.set_throttle("mutating", capacity=0, refill_per_s=0.0)
    api = Boto3EC2Api(Ec2ClientConfig(region=cloud.region, endpoint_url=cloud.ec2_endpoint, max_attempts=2))
    with pytest.raises(ThrottledError, match="VPCCNI_EC2_MUTATING_QPS"):
        api.create_tags(resources=[instance.primary_eni_id], tags={"a": "b"})


def test_client_rate_limit_keeps_the_testbed_bucket_from_throttling(
    cloud: Cloud, instance: InstanceInfo
) -> None:
    # The testbed allows 4 mutating calls at once, 5/s after; the client paces itself to 4/s, burst 3.
    cloud.set_throttle("mutating", capacity=4, refill_per_s=5.0)
    observer = RecordingObserver()
    limiter = Ec2RateLimiter(RateLimitConfig(mutating_qps=4, mutating_burst=3), observer=observer)
    api = Boto3EC2Api(
        Ec2ClientConfig(region=cloud.region, endpoint_url=cloud.ec2_endpoint, max_attempts=1),
        limiter=limiter,
        observer=observer,
    )
    for i in range(8):
        api.create_tags(resources=[instance.primary_eni_id], tags={"n": str(i)})
    assert not any(r.error_code == "RequestLimitExceeded" for r in cloud.call_log)
    assert len(observer.throttle_waits) == 5 and all(cat == "mutating" for cat, _ in observer.throttle_waits)


def test_injected_latency_is_survived(cloud: Cloud, instance: InstanceInfo, imds: ImdsServer) -> None:
    observer = RecordingObserver()
    node = _connect(cloud, imds, observer)
    cloud.set_latency("AttachNetworkInterface", 1.0)
    started = time.monotonic()
    eni = node.enis.allocate_eni(
        subnet_ids=[instance.subnet_id], security_groups=node.identity.security_groups
    )
    assert time.monotonic() - started >= 1.0
    attach = [c for c in observer.calls if c[0] == "AttachNetworkInterface"]
    assert attach[0][1] >= 1.0 and attach[0][2] is None  # the observer saw the slow call succeed
    assert eni.eni_id in _attached(cloud, instance.instance_id)


def test_stale_imds_loses_to_ec2(cloud: Cloud, instance: InstanceInfo, imds: ImdsServer) -> None:
    node = _connect(cloud, imds, RecordingObserver())
    sgs = node.identity.security_groups
    eni = node.enis.allocate_eni(subnet_ids=[instance.subnet_id], security_groups=sgs, ip_count=2)
    _freeze_imds(cloud)
    node.enis.unassign_ipv4s(eni.eni_id, eni.secondary_ipv4s[:1])
    added = node.enis.assign_ipv4s(eni.eni_id, 3)
    stale = {e.eni_id: e for e in node.metadata.attached_enis()}[eni.eni_id]
    assert eni.secondary_ipv4s[0] in stale.ipv4_addresses  # IMDS still shows the released IP

    merged = {e.eni_id: e for e in describe_attached_enis(node.metadata, node.enis)}[eni.eni_id].metadata
    primary, secondaries, _, _ = cloud.eni_addresses(eni.eni_id)
    assert set(merged.ipv4_addresses) == {primary, *secondaries}
    assert set(added) <= set(merged.ipv4_addresses)


def test_stale_imds_listing_a_deleted_eni_is_dropped(
    cloud: Cloud, instance: InstanceInfo, imds: ImdsServer
) -> None:
    node = _connect(cloud, imds, RecordingObserver())
    eni = node.enis.allocate_eni(
        subnet_ids=[instance.subnet_id], security_groups=node.identity.security_groups
    )
    _freeze_imds(cloud)
    node.enis.free_eni(eni.eni_id)
    assert eni.eni_id in [e.eni_id for e in node.metadata.attached_enis()]  # IMDS has not noticed
    assert [e.eni_id for e in describe_attached_enis(node.metadata, node.enis)] == [instance.primary_eni_id]


def test_leak_sweep_deletes_only_eligible_enis(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = Boto3EC2Api(Ec2ClientConfig(region=cloud.region, endpoint_url=cloud.ec2_endpoint))
    clock = FakeClock()
    dead = EniManager(
        ec2, instance_id="i-0deadbeef00000000", tag_settings=TagSettings(cluster_name="tb"), clock=clock
    )
    sgs = [cloud.security_group_id]

    def leaked(created_at: str | None, description: str = "aws-K8S-i-0deadbeef00000000") -> str:
        tags = [
            {"Key": "node.k8s.amazonaws.com/instance_id", "Value": "i-0deadbeef00000000"},
            {"Key": "cluster.k8s.amazonaws.com/name", "Value": "tb"},
        ]
        if created_at:
            tags.append({"Key": "node.k8s.amazonaws.com/createdAt", "Value": created_at})
        return str(
            ec2.create_network_interface(
                SubnetId=instance.subnet_id,
                Description=description,
                Groups=sgs,
                TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}],
            )["NetworkInterfaceId"]
        )

    old = leaked("2025-12-31T23:00:00Z")
    young = leaked("2025-12-31T23:58:00Z")
    untagged = leaked(None)
    foreign = leaked("2025-12-31T00:00:00Z", description="created by someone else")
    # clock.now() is 2026-01-01T00:00:00Z
    sweeper = LeakSweeper(ec2, dead, vpc_id=cloud.vpc_id, cluster_name="tb", clock=clock)
    result = sweeper.run_once()
    assert result.deleted == (old,) and result.skipped_young == (young,) and result.tagged == (untagged,)
    remaining = _all_enis(cloud)
    assert old not in remaining and {young, untagged, foreign, instance.primary_eni_id} <= remaining


def test_new_eni_is_awaited_in_lagging_imds(cloud: Cloud, instance: InstanceInfo, imds: ImdsServer) -> None:
    node = _connect(cloud, imds, RecordingObserver())
    cloud.set_imds_lag(2.0)  # IMDS shows the instance as it was two seconds ago
    eni = node.enis.allocate_eni(
        subnet_ids=[instance.subnet_id], security_groups=node.identity.security_groups, ip_count=3
    )
    assert eni.mac not in node.metadata.macs()  # not visible yet
    found = wait_for_eni_in_imds(node.metadata, eni_id=eni.eni_id, mac=eni.mac, clock=SystemClock())
    assert found.device_number == eni.device_index
    assert set(found.secondary_ipv4s) == set(eni.secondary_ipv4s)
