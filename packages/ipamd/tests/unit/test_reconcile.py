"""The reconciler against a fake EC2 and a fake IMDS that can lag behind it.

The rule under test (reconcile.py): an address becomes assignable only once EC2 confirms it on the ENI, or
ipamd's own EC2 call assigned it. IMDS alone never puts an address in the datastore (upstream #3887).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest
from vpccni.awsutils.tags import TAG_INSTANCE_ID as INSTANCE_ID_TAG
from vpccni.awsutils.tags import TAG_NO_MANAGE as NO_MANAGE_TAG
from vpccni.awsutils.tags import TagSettings
from vpccni.ipamd.ownership import EniOwnership
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.eni_actions import store_eni
from vpccni.ipamd.pool.manager import PoolManager
from vpccni.ipamd.pool.testing import FakeNode
from vpccni.ipamd.ports import CloudError, EniRequest
from vpccni.ipamd.reconcile import Reconciler, ReconcileReport


@dataclass(kw_only=True)
class Node(FakeNode):
    reconciler: Reconciler


def make_node(*, primary_ips: int = 3) -> Node:
    fake = FakeNode.create(ipv4_per_eni=10, primary_ips=primary_ips)

    # The same rule node init applies to the ENIs it finds at start.
    ownership = EniOwnership(instance_id="i-0test", primary_eni_id=fake.primary.eni_id)
    reconciler = fake.make_reconciler(is_managed=ownership.manages)
    return Node(**vars(fake), reconciler=reconciler)


def assignable(node: Node) -> set[IPv4Address]:
    """Every address a pod could get: drain the store."""
    got = set()
    while (ip := node.store.assign_pod()) is not None:
        got.add(ip)
    return got


def test_in_sync_costs_no_ec2_call() -> None:
    node = make_node()
    report = node.reconciler.run()
    assert report.ec2_checks == 0 and node.cloud.calls == []


def test_an_address_only_imds_lists_never_becomes_assignable() -> None:
    node = make_node()
    phantom = IPv4Address("10.0.200.9")
    node.imds.phantom_ips[node.primary.eni_id] = {phantom}
    report = node.reconciler.run()
    assert report.ec2_checks == 1
    assert IPv4Network(phantom) not in node.store.cidrs_of(node.primary.eni_id)
    assert phantom not in assignable(node)


def test_a_released_address_lingering_in_a_lagging_imds_is_never_re_added() -> None:
    # The pool gives an address back; IMDS keeps listing it for longer than the 60 s cooldown (#3887).
    node = make_node()
    manager = PoolManager(
        config=PoolConfig(max_enis=3, max_ips_per_eni=9, warm_ip_target=1),
        store=node.store,
        cloud=node.cloud,
        network=node.network,
        cooldown=node.cooldown,
        clock=node.clock,
        reconciler=node.reconciler,
    )
    node.imds.freeze()
    manager.update_pool()  # 3 free, warm 1: two go back
    released = node.cloud.calls.count("unassign")
    assert released == 1 and len(node.store.cidrs_of(node.primary.eni_id)) == 1
    gone = {c for c in node.imds.attached_enis()[0].cidrs} - node.store.cidrs_of(node.primary.eni_id)
    assert len(gone) == 2

    # Within the cooldown the lingering addresses are expected: not even an EC2 call.
    assert node.reconciler.run().ec2_checks == 0
    # After it, IMDS still lags: EC2 is asked, and EC2 does not have them.
    node.clock.advance(61)
    report = node.reconciler.run()
    assert report.ec2_checks == 1 and report.added_cidrs == ()
    assert not gone & node.store.cidrs_of(node.primary.eni_id)
    assert not {c.network_address for c in gone} & assignable(node)


def test_an_address_assigned_outside_ipamd_is_added_once_ec2_confirms_it() -> None:
    node = make_node()
    extra = node.cloud.add_ip_behind_our_back(node.primary.eni_id)
    report = node.reconciler.run()
    assert report.ec2_checks == 1 and report.added_cidrs == (IPv4Network(extra),)
    assert extra in assignable(node)


def test_an_address_ec2_took_away_is_force_removed_even_from_a_pod() -> None:
    node = make_node()
    pod = node.store.assign_pod()
    assert pod is not None
    node.cloud.remove_ip_behind_our_back(node.primary.eni_id, pod)
    report = node.reconciler.run()
    assert report.removed_cidrs == (IPv4Network(pod),) and report.pods_force_removed == 1
    assert pod in node.store.force_removed_pods


def test_a_new_attached_eni_is_set_up_with_the_addresses_ec2_reports() -> None:
    node = make_node()
    eni = node.cloud.allocate_eni(EniRequest(ips=2))
    node.imds.phantom_ips[eni.eni_id] = {IPv4Address("10.0.200.1")}
    report = node.reconciler.run()
    assert report.added_enis == (eni.eni_id,)
    assert node.store.cidrs_of(eni.eni_id) == set(eni.cidrs)
    assert eni.eni_id in node.network.set_up


def test_an_unmanaged_eni_is_left_alone() -> None:
    node = make_node()
    eni = node.cloud.add_existing_eni(device_number=1, ips=2, tags={NO_MANAGE_TAG: "true"})
    report = node.reconciler.run()
    assert report.added_enis == () and eni.eni_id not in node.store.eni_ids()
    assert eni.eni_id not in node.network.set_up
    assert node.reconciler.run().ec2_checks == 0  # remembered: no DescribeNetworkInterfaces every minute


def test_an_eni_ipamd_just_freed_is_not_re_added_while_imds_lags() -> None:
    node = make_node()
    eni = node.cloud.allocate_eni(EniRequest(ips=2))
    node.reconciler.run()
    node.imds.freeze()
    node.store.remove_eni(eni.eni_id)
    node.cooldown.add([eni.eni_id])
    node.cloud.free_eni(eni.eni_id)
    calls = len(node.cloud.calls)
    assert node.reconciler.run().added_enis == ()
    assert len(node.cloud.calls) == calls  # in cooldown: not even a DescribeNetworkInterfaces
    node.clock.advance(61)
    assert node.reconciler.run().added_enis == ()  # EC2 says it is gone


def test_an_eni_missing_from_a_lagging_imds_is_kept_while_ec2_has_it() -> None:
    node = make_node()
    node.imds.freeze()
    eni = node.cloud.allocate_eni(EniRequest(ips=2))  # the pool attached it; IMDS has not caught up
    store_eni(node.store, eni, is_primary=False)
    report = node.reconciler.run()
    assert report.removed_enis == ()
    assert eni.eni_id in node.store.eni_ids()


def test_an_eni_gone_from_imds_and_ec2_is_force_removed_with_its_pods() -> None:
    node = make_node()
    eni = node.cloud.allocate_eni(EniRequest(ips=2))
    node.reconciler.run()
    node.store.set_excluded(node.primary.eni_id)  # make the pod land on the secondary ENI
    pod = node.store.assign_pod()
    node.cloud.free_eni(eni.eni_id)
    report = node.reconciler.run()
    assert report.removed_enis == (eni.eni_id,) and report.pods_force_removed == 1
    assert pod in node.store.force_removed_pods
    assert eni.eni_id in node.network.torn_down


def test_an_ec2_failure_changes_nothing() -> None:
    node = make_node()
    node.cloud.add_ip_behind_our_back(node.primary.eni_id)
    node.cloud.fail("describe_enis", CloudError("slow down", code="RequestLimitExceeded"))
    before = node.store.snapshot()
    assert node.reconciler.run().ec2_checks == 0
    assert node.store.snapshot() == before


def test_a_new_eni_is_tagged_as_node_init_tags_them() -> None:
    fake = FakeNode.create(ipv4_per_eni=10)
    ownership = EniOwnership(instance_id="i-0test", tags=TagSettings(additional_tags={"team": "net"}))
    reconciler = fake.make_reconciler(prepare_eni=partial(ownership.tag, fake.cloud))
    eni = fake.cloud.allocate_eni(EniRequest(ips=1))
    reconciler.run()
    assert fake.cloud.eni(eni.eni_id).tag_map == {INSTANCE_ID_TAG: "i-0test", "team": "net"}


# --- IPv6 mode: the primary ENI's /80 prefixes, IMDS first and EC2 the authority ----------------------------


def make_ipv6_node() -> FakeNode:
    node = FakeNode.create(ipv4_per_eni=10, primary_ips=3, store_primary=False)
    node.cloud.assign_ipv6_prefix(node.primary.eni_id)
    store_eni(node.store, node.cloud.eni(node.primary.eni_id), is_primary=True, ipv6=True)
    return node


def test_ipv6_in_sync_costs_no_ec2_call_and_ipv4_addresses_are_not_its_concern() -> None:
    node = make_ipv6_node()
    cloud_calls = len(node.cloud.calls)
    report = node.make_reconciler(ipv6=True).run()
    assert report.ec2_checks == 0 and len(node.cloud.calls) == cloud_calls
    assert node.store_cidrs() == node.ec2_cidrs(ipv6=True) and len(node.store_cidrs()) == 1


def test_ipv6_a_prefix_only_imds_lists_is_never_served() -> None:
    node = make_ipv6_node()
    phantom = IPv6Network("2001:db8:0:200::/80")
    node.imds.phantom_ipv6_prefixes[node.primary.eni_id] = {phantom}
    report = node.make_reconciler(ipv6=True).run()
    assert report.ec2_checks == 1 and report.added_cidrs == ()
    assert phantom not in node.store.cidrs_of(node.primary.eni_id)


def test_ipv6_a_prefix_ec2_took_away_is_removed_with_its_pods() -> None:
    node = make_ipv6_node()
    assert node.store.assign_pod(prefix_mode=True) is not None
    gone = node.cloud.remove_ipv6_prefixes_behind_our_back(node.primary.eni_id)
    report = node.make_reconciler(ipv6=True).run()
    assert set(report.removed_cidrs) == gone and report.pods_force_removed == 1
    assert node.store.cidrs_of(node.primary.eni_id) == set()


def test_ipv6_a_prefix_ec2_gained_is_added() -> None:
    node = make_ipv6_node()
    (added,) = node.cloud.assign_ipv6_prefix(node.primary.eni_id)
    report = node.make_reconciler(ipv6=True).run()
    assert report.added_cidrs == (added,)
    assert added in node.store.cidrs_of(node.primary.eni_id)


def test_ipv6_mode_leaves_an_eni_attached_behind_its_back_alone() -> None:
    node = make_ipv6_node()
    ownership = EniOwnership(instance_id="i-0test", primary_eni_id=node.primary.eni_id, primary_only=True)
    other = node.cloud.add_existing_eni(device_number=1, ips=2)
    report = node.make_reconciler(ipv6=True, is_managed=ownership.manages).run()
    assert report.added_enis == () and other.eni_id not in node.store.eni_ids()
    assert node.network.set_up == set()


def test_ipv4_mode_leaves_an_enis_ipv6_prefixes_alone() -> None:
    node = make_node()
    node.cloud.assign_ipv6_prefix(node.primary.eni_id)
    calls = len(node.cloud.calls)
    report = node.reconciler.run()
    assert report.ec2_checks == 0 and len(node.cloud.calls) == calls
    assert all(c.version == 4 for c in node.store.cidrs_of(node.primary.eni_id))


def test_imds_down_skips_the_round_with_one_line_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    node = make_node()
    before = node.store.snapshot()
    node.imds.outage = CloudError(
        "reading the attached ENIs from IMDS: IMDS did not answer 'mac' after 4 tries; check that IMDSv2 is"
        " reachable",
        code="ImdsUnavailable",
    )
    caplog.set_level(logging.INFO, logger="vpccni.ipamd.reconcile")
    report = node.reconciler.run()  # the pool loop's guard would log a traceback for anything raised here
    assert report == ReconcileReport() and node.cloud.calls == []
    assert node.store.snapshot() == before
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.WARNING, None)]
    assert "check that IMDSv2 is reachable" in caplog.records[0].getMessage()
