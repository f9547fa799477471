from __future__ import annotations

import datetime as dt
import ipaddress
import random
import time

import pytest
from vpccni.awsutils.eni import EniManager
from vpccni.awsutils.errors import ImdsNotFoundError, ImdsStaleError
from vpccni.awsutils.imds import InstanceMetadata
from vpccni.awsutils.inventory import describe_attached_enis, wait_for_eni_in_imds
from vpccni.awsutils.leak import LeakSweeper
from vpccni.awsutils.tags import TagSettings
from vpccni.awsutils.testing import FakeClock, FakeEC2, FakeImds

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def _leaked(
    ec2: FakeEC2,
    subnet: str,
    *,
    created: str | None,
    description: str = "aws-K8S-i-dead",
    cluster: str | None = None,
    instance: str = "i-dead",
) -> str:
    tags = [{"Key": "node.k8s.amazonaws.com/instance_id", "Value": instance}]
    if created is not None:
        tags.append({"Key": "node.k8s.amazonaws.com/createdAt", "Value": created})
    if cluster is not None:
        tags.append({"Key": "cluster.k8s.amazonaws.com/name", "Value": cluster})
    return str(
        ec2.create_network_interface(
            SubnetId=subnet,
            Description=description,
            Groups=["sg-1"],
            TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}],
        )["NetworkInterfaceId"]
    )


def test_sweep_deletes_only_eligible_enis() -> None:
    ec2 = FakeEC2()
    subnet = ec2.add_subnet("10.0.0.0/24")
    me = ec2.launch_instance("m5.large", subnet)
    clock = FakeClock(start=T0)
    mgr = EniManager(ec2, instance_id=me, tag_settings=TagSettings(cluster_name="prod"), clock=clock)
    old = _leaked(ec2, subnet, created="2026-03-01T11:50:00Z", cluster="prod")
    young = _leaked(ec2, subnet, created="2026-03-01T11:58:00Z", cluster="prod")
    untagged = _leaked(ec2, subnet, created=None, cluster="prod")
    foreign_desc = _leaked(
        ec2, subnet, created="2026-03-01T10:00:00Z", description="someone else", cluster="prod"
    )
    other_cluster = _leaked(ec2, subnet, created="2026-03-01T10:00:00Z", cluster="dev")
    in_use = mgr.allocate_eni(
        subnet_ids=[subnet], security_groups=["sg-1"]
    ).eni_id  # attached: never a candidate

    sweeper = LeakSweeper(ec2, mgr, vpc_id=ec2.vpc_id, cluster_name="prod", clock=clock)
    result = sweeper.run_once()
    assert result.deleted == (old,)
    assert result.skipped_young == (young,)
    assert result.tagged == (untagged,)
    assert set(ec2.enis) >= {young, untagged, foreign_desc, other_cluster, in_use}
    assert old not in ec2.enis
    tags = {t["Key"]: t["Value"] for t in ec2.enis[untagged]["TagSet"]}
    assert tags["node.k8s.amazonaws.com/createdAt"] == "2026-03-01T12:00:00Z"
    describe = next(c for c in ec2.calls if c[0] == "DescribeNetworkInterfaces" and c[1]["Filters"])
    assert {f["Name"] for f in describe[1]["Filters"]} == {
        "tag-key",
        "status",
        "vpc-id",
        "tag:cluster.k8s.amazonaws.com/name",
    }

    clock.advance(600)  # ten minutes later the young and the freshly tagged ENIs are old enough
    second = sweeper.run_once()
    assert set(second.deleted) == {young, untagged}
    assert foreign_desc in ec2.enis and other_cluster in ec2.enis


def test_at_start_the_instances_own_unattached_enis_go_whatever_their_age() -> None:
    """A kill between CreateNetworkInterface and AttachNetworkInterface leaves an ENI tagged with this
    instance; at the next start it is deleted at once (the hourly sweep would wait five minutes)."""
    ec2 = FakeEC2()
    subnet = ec2.add_subnet("10.0.0.0/24")
    me = ec2.launch_instance("m5.large", subnet)
    clock = FakeClock(start=T0)
    mgr = EniManager(ec2, instance_id=me, tag_settings=TagSettings(), clock=clock)
    created_now = "2026-03-01T12:00:00Z"
    mine = _leaked(ec2, subnet, created=created_now, description=f"aws-K8S-{me}", instance=me)
    untagged_age = _leaked(ec2, subnet, created=None, description=f"aws-K8S-{me}", instance=me)
    another_node = _leaked(ec2, subnet, created=created_now)
    not_ipamds = _leaked(ec2, subnet, created=created_now, description="a user's ENI", instance=me)
    attached = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"]).eni_id

    result = LeakSweeper(ec2, mgr, vpc_id=ec2.vpc_id, clock=clock).run_own()
    assert sorted(result.deleted) == sorted([mine, untagged_age]) and result.failed == ()
    assert {another_node, not_ipamds, attached} <= set(ec2.enis)
    assert mine not in ec2.enis and untagged_age not in ec2.enis


def test_sweeper_thread_spreads_the_first_sweep_over_an_interval_then_sweeps_about_hourly() -> None:
    ec2 = FakeEC2()
    subnet = ec2.add_subnet("10.0.0.0/24")
    me = ec2.launch_instance("m5.large", subnet)
    clock = FakeClock(start=T0)
    mgr = EniManager(ec2, instance_id=me, clock=clock)
    sweeper = LeakSweeper(ec2, mgr, vpc_id=ec2.vpc_id, clock=clock, rng=random.Random(7))
    expected = random.Random(7)
    expected_first, expected_next = expected.uniform(0, 3600), 3600 + expected.uniform(-300, 300)
    sweeper.start()
    deadline = time.monotonic() + 5
    while ec2.api_names().count("DescribeNetworkInterfaces") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    sweeper.stop()
    assert ec2.api_names().count("DescribeNetworkInterfaces") >= 2
    # Nodes that start together sweep anywhere within the first hour (upstream: within 5 minutes).
    assert clock.sleeps[0] == expected_first and 0 <= clock.sleeps[0] <= 3600
    assert clock.sleeps[1] == expected_next and 3300 <= clock.sleeps[1] <= 3900
    count = len(ec2.calls)
    time.sleep(0.05)
    assert len(ec2.calls) == count  # stopped: no more sweeps


def test_describe_attached_enis_prefers_ec2_and_drops_unknown() -> None:
    ec2 = FakeEC2()
    subnet = ec2.add_subnet("10.0.0.0/24")
    me = ec2.launch_instance("m5.large", subnet)
    mgr = EniManager(ec2, instance_id=me, clock=FakeClock())
    second = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], ip_count=2)
    imds = FakeImds()
    imds.sync_from(ec2, me)
    # IMDS goes stale: EC2 moved on (one IP released, one assigned), and IMDS still lists a deleted ENI.
    mgr.unassign_ipv4s(second.eni_id, [second.secondary_ipv4s[0]])
    ec2.add_subnet("10.0.1.0/24")  # not involved; the next assignment must not reuse the released address
    mgr.assign_ipv4s(second.eni_id, 1)
    live = tuple(
        ipaddress.IPv4Address(a["PrivateIpAddress"]) for a in ec2.enis[second.eni_id]["PrivateIpAddresses"]
    )
    stale = InstanceMetadata(imds).eni(second.mac)
    imds.set_eni(
        "02:ff:00:00:00:99",
        eni_id="eni-0deleted",
        device_number=2,
        subnet_id=subnet,
        subnet_cidr="10.0.0.0/24",
        vpc_id=ec2.vpc_id,
        ipv4s=["10.0.0.200"],
    )

    enis = describe_attached_enis(InstanceMetadata(imds), mgr)
    assert [e.eni_id for e in enis] == [ec2_primary(ec2, me), second.eni_id]
    assert enis[0].is_primary and enis[0].metadata.device_number == 0
    merged = enis[1].metadata
    assert stale.ipv4_addresses != live  # IMDS really is behind
    assert merged.ipv4_addresses == live
    assert merged.ipv4_addresses[0] == second.primary_ipv4
    assert merged.subnet_ipv4_cidr == ipaddress.IPv4Network("10.0.0.0/24")  # only IMDS knows it
    assert enis[1].tags["node.k8s.amazonaws.com/instance_id"] == me


def ec2_primary(ec2: FakeEC2, instance_id: str) -> str:
    return next(
        e["NetworkInterfaceId"]
        for e in ec2.enis.values()
        if e.get("Attachment", {}).get("InstanceId") == instance_id and e["Attachment"]["DeviceIndex"] == 0
    )


class LaggingImds(FakeImds):
    """Shows the new ENI only after some reads, then its addresses after a few more."""

    def __init__(self, full: FakeImds, *, hide_for: int, no_ips_for: int, mac: str) -> None:
        super().__init__(full.data)
        self.mac = mac
        self.hide_for = hide_for
        self.no_ips_for = no_ips_for
        self.polls = 0

    def get(self, path: str) -> str:
        base = f"network/interfaces/macs/{self.mac}/"
        if path == base + "interface-id":
            self.polls += 1
        if path.startswith(base) and self.polls <= self.hide_for:
            raise ImdsNotFoundError(path)
        if path == base + "local-ipv4s" and self.polls <= self.hide_for + self.no_ips_for:
            return self.data[path].splitlines()[0]
        return super().get(path)


def test_wait_for_eni_in_imds_polls_with_backoff_until_addresses_show() -> None:
    ec2 = FakeEC2()
    subnet = ec2.add_subnet("10.0.0.0/24")
    me = ec2.launch_instance("m5.large", subnet)
    clock = FakeClock()
    mgr = EniManager(ec2, instance_id=me, clock=clock)
    eni = mgr.allocate_eni(subnet_ids=[subnet], security_groups=["sg-1"], ip_count=2)
    full = FakeImds()
    full.sync_from(ec2, me)
    lagging = LaggingImds(full, hide_for=2, no_ips_for=2, mac=eni.mac)
    clock.sleeps.clear()
    found = wait_for_eni_in_imds(InstanceMetadata(lagging), eni_id=eni.eni_id, mac=eni.mac, clock=clock)
    assert found.eni_id == eni.eni_id and set(found.secondary_ipv4s) == set(eni.secondary_ipv4s)
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8]


def test_wait_for_eni_in_imds_gives_up_with_a_stale_error() -> None:
    imds = FakeImds({"mac": "02:00:00:00:00:01"})
    with pytest.raises(ImdsStaleError, match="eni-9"):
        wait_for_eni_in_imds(
            InstanceMetadata(imds), eni_id="eni-9", mac="02:00:00:00:00:09", clock=FakeClock()
        )


def test_first_sweeps_of_nodes_started_together_spread_over_the_interval() -> None:
    ec2 = FakeEC2()
    mgr = EniManager(ec2, instance_id="i-1", clock=FakeClock())
    firsts = [
        LeakSweeper(ec2, mgr, vpc_id="vpc-1", rng=random.Random(seed)).first_delay() for seed in range(200)
    ]
    assert max(firsts) <= 3600 and sum(1 for f in firsts if f > 1800) > 50  # not bunched at the start
    upstream = LeakSweeper(ec2, mgr, vpc_id="vpc-1", first_delay_max_s=300, rng=random.Random(1))
    assert upstream.first_delay() <= 300
