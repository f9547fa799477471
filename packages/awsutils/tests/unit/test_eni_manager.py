"""ENI lifecycle against the stateful in-memory EC2 (vpccni.awsutils.testing.FakeEC2)."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from vpccni.awsutils.eni import EniManager
from vpccni.awsutils.errors import (
    AttachmentLimitExceededError,
    AwsUtilsError,
    InsufficientCidrBlocksError,
    PrivateIpAddressLimitExceededError,
    UnauthorizedOperationError,
)
from vpccni.awsutils.tags import TagSettings
from vpccni.awsutils.testing import FakeClock, FakeEC2

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def ec2() -> FakeEC2:
    return FakeEC2()


def _node(
    ec2: FakeEC2, cluster: str = "", extra: dict[str, str] | None = None
) -> tuple[EniManager, str, FakeClock]:
    primary = ec2.add_subnet("10.0.0.0/24")
    instance = ec2.launch_instance("m5.large", primary)
    clock = FakeClock(start=NOW)
    settings = TagSettings(cluster_name=cluster, additional_tags=extra or {})
    return EniManager(ec2, instance_id=instance, tag_settings=settings, clock=clock), primary, clock


def _tags(ec2: FakeEC2, eni_id: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in ec2.enis[eni_id]["TagSet"]}


def test_allocate_creates_tags_attaches_and_sets_delete_on_termination(ec2: FakeEC2) -> None:
    mgr, subnet, _ = _node(ec2, cluster="prod", extra={"team": "net"})
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], ip_count=9)
    raw = ec2.enis[eni.eni_id]
    assert raw["Description"] == f"aws-K8S-{mgr.instance_id}"
    assert _tags(ec2, eni.eni_id) == {
        "node.k8s.amazonaws.com/instance_id": mgr.instance_id,
        "node.k8s.amazonaws.com/createdAt": "2026-03-01T12:00:00Z",
        "cluster.k8s.amazonaws.com/name": "prod",
        "eks:eni:owner": "amazon-vpc-cni",
        "team": "net",
    }
    assert raw["Attachment"]["DeleteOnTermination"] is True
    assert eni.device_index == 1 and raw["Attachment"]["DeviceIndex"] == 1
    assert len(eni.secondary_ipv4s) == 9 and eni.primary_ipv4 is not None
    assert ec2.api_names()[-4:] == [
        "CreateNetworkInterface",
        "DescribeInstances",
        "AttachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
    ]
    second = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], prefix_count=2)
    assert second.device_index == 2 and len(second.ipv4_prefixes) == 2
    assert all(p.prefixlen == 28 for p in second.ipv4_prefixes)


@pytest.mark.parametrize("failing", ["AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"])
def test_failed_attach_or_modify_deletes_the_new_eni(ec2: FakeEC2, failing: str) -> None:
    mgr, subnet, _ = _node(ec2)
    before = set(ec2.enis)
    ec2.fail_next(failing, "UnauthorizedOperation")
    with pytest.raises(UnauthorizedOperationError, match=f"ec2:{failing}"):
        mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], ip_count=1)
    assert set(ec2.enis) == before  # nothing leaked


def test_attachment_limit_is_its_own_error_and_does_not_leak(ec2: FakeEC2) -> None:
    mgr, subnet, _ = _node(ec2)
    for _ in range(2):
        mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"])
    count = len(ec2.enis)
    with pytest.raises(AttachmentLimitExceededError):
        mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"])
    assert len(ec2.enis) == count


def test_exhausted_subnet_falls_through_to_the_next(ec2: FakeEC2) -> None:
    mgr, primary, _ = _node(ec2)
    tiny = ec2.add_subnet("10.0.1.0/28")  # 11 usable addresses: no /28 fits
    eni = mgr.allocate_eni(subnet_ids=[tiny, primary], security_groups=["sg-1"], prefix_count=1)
    assert eni.subnet_id == primary
    with pytest.raises(InsufficientCidrBlocksError) as info:
        mgr.allocate_eni(subnet_ids=[tiny], security_groups=["sg-1"], prefix_count=1)
    assert info.value.subnet_id == tiny and tiny in str(info.value)
    other = ec2.add_subnet("10.0.2.0/28")
    with pytest.raises(InsufficientCidrBlocksError) as both:
        mgr.allocate_eni(subnet_ids=[tiny, other], security_groups=["sg-1"], prefix_count=1)
    assert both.value.subnet_ids == (tiny, other)  # every subnet tried is named, so each can rest


def test_no_subnet_is_actionable(ec2: FakeEC2) -> None:
    mgr, _, _ = _node(ec2)
    with pytest.raises(AwsUtilsError, match=r"kubernetes\.io/role/cni=1"):
        mgr.allocate_eni(subnet_ids=[], security_groups=["sg-1"])
    with pytest.raises(ValueError):
        mgr.allocate_eni(subnet_ids=["s"], security_groups=[], ip_count=1, prefix_count=1)


def test_free_detaches_waits_and_deletes(ec2: FakeEC2) -> None:
    mgr, subnet, clock = _node(ec2)
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], ip_count=3)
    ec2.fail_next("DetachNetworkInterface", "IncorrectState", 2)
    ec2.fail_next("DeleteNetworkInterface", "RequestLimitExceeded", 1)
    clock.sleeps.clear()
    mgr.free_eni(eni.eni_id)
    assert eni.eni_id not in ec2.enis
    # Two detach retries (200 ms, 400 ms ±15 %), the 2 s wait, one delete retry (500 ms ±15 %).
    assert len(clock.sleeps) == 4 and clock.sleeps[2] == 2.0
    assert (
        0.17 <= clock.sleeps[0] <= 0.23
        and 0.34 <= clock.sleeps[1] <= 0.46
        and 0.42 <= clock.sleeps[3] <= 0.58
    )


def test_free_of_a_missing_eni_is_done(ec2: FakeEC2) -> None:
    mgr, _, _ = _node(ec2)
    mgr.free_eni("eni-doesnotexist")
    assert ec2.api_names()[-1] == "DescribeNetworkInterfaces"


def test_unauthorized_detach_is_not_retried(ec2: FakeEC2) -> None:
    mgr, subnet, _ = _node(ec2)
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"])
    ec2.fail_next("DetachNetworkInterface", "UnauthorizedOperation")
    with pytest.raises(UnauthorizedOperationError):
        mgr.free_eni(eni.eni_id)
    assert ec2.api_names().count("DetachNetworkInterface") == 1


def test_assign_and_unassign_ips_and_prefixes(ec2: FakeEC2) -> None:
    mgr, subnet, _ = _node(ec2)
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"])
    ips = mgr.assign_ipv4s(eni.eni_id, 4)
    assert len(ips) == 4 and all(isinstance(i, ipaddress.IPv4Address) for i in ips)
    mgr.unassign_ipv4s(eni.eni_id, ips[:2])
    have = {a["PrivateIpAddress"] for a in ec2.enis[eni.eni_id]["PrivateIpAddresses"]}
    assert str(ips[0]) not in have and str(ips[3]) in have
    prefixes = mgr.assign_prefixes(eni.eni_id, 1)
    assert prefixes[0].prefixlen == 28
    with pytest.raises(PrivateIpAddressLimitExceededError):
        mgr.assign_ipv4s(eni.eni_id, 10)  # m5.large: 10 addresses per ENI
    mgr.unassign_prefixes(eni.eni_id, prefixes)
    assert ec2.enis[eni.eni_id]["Ipv4Prefixes"] == []
    v6 = mgr.assign_ipv6_prefix(eni.eni_id)
    assert v6[0].prefixlen == 80
    mgr.unassign_ipv6_prefixes(eni.eni_id, v6)
    assert ec2.enis[eni.eni_id]["Ipv6Prefixes"] == []
    mgr.unassign_ipv4s(eni.eni_id, [])  # nothing to do: no call
    assert ec2.api_names()[-1] == "UnassignIpv6Addresses"


def test_describe_drops_enis_ec2_does_not_know(ec2: FakeEC2) -> None:
    mgr, subnet, _ = _node(ec2)
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"])
    found = mgr.describe_enis([eni.eni_id, "eni-0stale", "eni-0gone"])
    assert list(found) == [eni.eni_id]
    assert found[eni.eni_id].attachment_id == eni.attachment_id


def test_ensure_tags_sets_only_missing_or_different(ec2: FakeEC2) -> None:
    mgr, subnet, _ = _node(ec2, cluster="prod")
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"])
    current = _tags(ec2, eni.eni_id)
    assert mgr.ensure_tags(eni.eni_id, current) == {}
    assert "CreateTags" not in ec2.api_names()
    current["cluster.k8s.amazonaws.com/name"] = "old"
    del current["eks:eni:owner"]
    assert mgr.ensure_tags(eni.eni_id, current) == {
        "cluster.k8s.amazonaws.com/name": "prod",
        "eks:eni:owner": "amazon-vpc-cni",
    }
    assert ec2.api_names().count("CreateTags") == 1


def test_create_tags_retries_transient_errors(ec2: FakeEC2) -> None:
    mgr, subnet, _ = _node(ec2)
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"])
    ec2.fail_next("CreateTags", "RequestLimitExceeded", 2)
    mgr.create_tags(eni.eni_id, {"a": "b"})
    assert _tags(ec2, eni.eni_id)["a"] == "b"


def test_enis_allocated_at_once_get_distinct_device_indexes(ec2: FakeEC2) -> None:
    mgr, _, clock = _node(ec2)
    # DescribeInstances lists only the primary (index 0) until an attach lands: two allocations in flight
    # must not both pick index 1.
    first, second = mgr.free_device_index(0), mgr.free_device_index(0)
    assert (first, second) == (1, 2)
    mgr._release_device_index(0, first)  # that attach failed: its index is free again
    assert mgr.free_device_index(0) == 1
    clock.advance(61)  # holds lapse once DescribeInstances has had time to list the attachments
    assert mgr.free_device_index(0) == 1


def test_a_retried_attach_that_finds_the_eni_attached_here_is_done(ec2: FakeEC2) -> None:
    class LostAnswer(FakeEC2):
        """EC2 attached the ENI but the answer was lost; the SDK's retry finds it in use."""

        def attach_network_interface(
            self, *, eni_id: str, instance_id: str, device_index: int, network_card: int
        ) -> str:
            super().attach_network_interface(
                eni_id=eni_id, instance_id=instance_id, device_index=device_index, network_card=network_card
            )
            raise self._fail("AttachNetworkInterface", "InvalidNetworkInterface.InUse", f"{eni_id} in use")

    lost = LostAnswer()
    mgr, subnet, _ = _node(lost)
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], ip_count=2)
    raw = lost.enis[eni.eni_id]
    assert raw["Attachment"]["InstanceId"] == mgr.instance_id and raw["Attachment"]["DeleteOnTermination"]
    assert eni.attachment_id == raw["Attachment"]["AttachmentId"]
    assert "DeleteNetworkInterface" not in lost.api_names()


def test_describe_asks_ec2_for_this_node_s_enis_with_a_filter(ec2: FakeEC2) -> None:
    mgr, subnet, _ = _node(ec2)
    mine = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], ip_count=1)
    other = EniManager(ec2, instance_id=ec2.launch_instance("m5.large", subnet), clock=FakeClock())
    theirs = other.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], ip_count=1)
    found = mgr.describe_enis([mine.eni_id, theirs.eni_id, "eni-0gone"])
    assert list(found) == [mine.eni_id]  # attached elsewhere, or unknown: left out
    params = [p for api, p in ec2.calls if api == "DescribeNetworkInterfaces"][-1]
    # Filtered (EC2's larger request bucket), never an id list (the smaller, unfiltered one).
    assert params["NetworkInterfaceIds"] == [] and {f["Name"] for f in params["Filters"]} == {
        "attachment.instance-id",
        "network-interface-id",
    }
