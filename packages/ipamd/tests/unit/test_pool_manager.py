"""The pool manager against stateful fakes of EC2, the node network and the datastore."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.manager import PoolManager, PoolPolicy, PoolTimers
from vpccni.ipamd.pool.status import GrowthState
from vpccni.ipamd.pool.testing import FakeNode
from vpccni.ipamd.ports import CloudError
from vpccni.ipamd.reconcile import Reconciler

T3_SMALL = {"max_enis": 3, "max_ips_per_eni": 3, "max_pods": 11}


@dataclass(kw_only=True)
class Node(FakeNode):
    reconciler: Reconciler
    manager: PoolManager

    def pods(self, n: int, *, prefix_mode: bool = False) -> list[IPv4Address]:
        """Start pods one at a time, with a pool iteration after each (as the allocator's wake-up does)."""
        ips = []
        for _ in range(n):
            ip = self.store.assign_pod(prefix_mode=prefix_mode)
            assert ip is not None, "no free address for a pod"
            ips.append(ip)
            self.manager.update_pool()
        return ips


def make_node(
    cfg: PoolConfig | None = None,
    *,
    schedulable: Callable[[], bool] = lambda: True,
    policy: PoolPolicy | None = None,
    timers: PoolTimers | None = None,
    ipv4_per_eni: int = 4,
    other_subnets: tuple[str, ...] = (),
) -> Node:
    fake = FakeNode.create(ipv4_per_eni=ipv4_per_eni, other_subnets=other_subnets)
    reconciler = fake.make_reconciler()
    manager = PoolManager(
        config=cfg or PoolConfig(**T3_SMALL),
        store=fake.store,
        cloud=fake.cloud,
        network=fake.network,
        cooldown=fake.cooldown,
        clock=fake.clock,
        reconciler=reconciler,
        schedulable=schedulable,
        policy=policy or PoolPolicy(),
        timers=timers or PoolTimers(),
    )
    return Node(**vars(fake), reconciler=reconciler, manager=manager)


def test_a_fresh_node_fills_the_primary_eni() -> None:
    node = make_node()
    status = node.manager.update_pool()
    assert status.state is GrowthState.OK
    assert node.cloud.calls == ["assign_ips"]
    assert len(node.store.cidrs_of(node.primary.eni_id)) == 3
    assert node.store_cidrs() == node.ec2_cidrs()


def test_warm_and_minimum_targets_are_reached_in_one_wake_up() -> None:
    node = make_node(PoolConfig(**T3_SMALL, warm_ip_target=2, minimum_ip_target=5))
    node.manager.update_pool()
    assert node.cloud.calls == ["assign_ips", "allocate_eni"]
    assert len(node.store_cidrs()) == 5
    new_eni = (node.store.eni_ids() - {node.primary.eni_id}).pop()
    assert node.network.set_up == {new_eni}
    assert node.store_cidrs() == node.ec2_cidrs()


def test_the_datastore_lock_is_never_held_across_an_ec2_call() -> None:
    node = make_node(PoolConfig(**T3_SMALL, warm_ip_target=2, minimum_ip_target=5))
    held: list[str] = []
    node.cloud.on_call = lambda name: held.append(name) if node.store.lock.locked() else None
    node.manager.update_pool()
    node.pods(5)
    node.manager.update_pool()
    assert node.cloud.calls and held == []


def test_a_full_subnet_rests_briefly_and_the_node_says_which_and_when() -> None:
    node = make_node()
    # as AssignPrivateIpAddresses answers it: no subnet id in the error, the ENI's subnet is meant
    node.cloud.fail("assign_ips", CloudError("no room", code="InsufficientFreeAddressesInSubnet"))
    status = node.manager.update_pool()
    assert status.state is GrowthState.SUBNET_EXHAUSTED and status.subnet_ids == ("subnet-0fake",)
    assert "subnet-0fake" in status.message and "in 1" in status.message  # "asks again in 10/11 s"
    assert status.retryable and not status.may_grow_soon  # ADD fails now, with code 11, not 999
    assert node.cloud.calls == ["assign_ips", "allocate_eni"]  # no other subnet could take a new ENI
    node.clock.advance(5)
    assert node.manager.update_pool().state is GrowthState.SUBNET_EXHAUSTED
    assert node.cloud.calls == ["assign_ips", "allocate_eni"], "no EC2 call while every subnet rests"
    node.clock.advance(7)
    assert node.manager.update_pool().state is GrowthState.OK
    assert len(node.store_cidrs()) == 3


def test_repeated_refusals_double_the_rest_up_to_two_minutes() -> None:
    node = make_node()
    rests = []
    for _ in range(6):
        node.cloud.fail("assign_ips", CloudError("no room", code="InsufficientFreeAddressesInSubnet"))
        status = node.manager.update_pool()
        assert status.retry_after_s is not None
        rests.append(status.retry_after_s)
        node.clock.advance(status.retry_after_s + 0.01)
    for base, rest in zip([10, 20, 40, 80, 120, 120], rests, strict=True):
        assert base <= rest <= base * 1.1  # up to 10 % of jitter, so failed nodes do not return together
    assert node.manager.update_pool().state is GrowthState.OK


def test_a_full_subnet_sends_growth_to_another_tagged_subnet_at_once() -> None:
    # The trial: InsufficientFreeAddressesInSubnet three times on a fresh node with a second subnet that had
    # room froze the pool for minutes. Now the new ENI goes to the other subnet in the same iteration.
    node = make_node(PoolConfig(**T3_SMALL, warm_ip_target=3), other_subnets=("subnet-0room",))
    node.cloud.fail("assign_ips", CloudError("no room", code="InsufficientFreeAddressesInSubnet"), times=3)
    status = node.manager.update_pool()
    assert status.state in (GrowthState.OK, GrowthState.GROWING), status.message
    assert node.cloud.calls == ["assign_ips", "allocate_eni"]
    new = (node.store.eni_ids() - {node.primary.eni_id}).pop()
    assert node.cloud.eni(new).subnet_id == "subnet-0room"
    assert len(node.store_cidrs()) == 3 and node.store_cidrs() == node.ec2_cidrs()
    # the first subnet is asked again once its rest is over, and EC2's refusals are used up by then
    node.clock.advance(12)
    node.pods(3)
    assert node.store_cidrs() == node.ec2_cidrs()


def test_custom_networking_with_its_subnet_full_waits_without_calling_ec2() -> None:
    cfg = PoolConfig(**T3_SMALL, custom_networking=True)
    node = make_node(cfg, policy=PoolPolicy(subnet_id="subnet-0pods"))
    node.cloud.fail(
        "allocate_eni",
        CloudError("full", code="InsufficientFreeAddressesInSubnet", subnet_id="subnet-0pods"),
    )
    status = node.manager.update_pool()
    assert status.state is GrowthState.SUBNET_EXHAUSTED and status.subnet_ids == ("subnet-0pods",)
    calls = list(node.cloud.calls)
    node.manager.update_pool()
    assert node.cloud.calls == calls


def test_throttling_is_reported_and_retried_next_iteration() -> None:
    node = make_node()
    node.cloud.fail("assign_ips", CloudError("slow down", code="RequestLimitExceeded"))
    status = node.manager.update_pool()
    assert status.state is GrowthState.THROTTLED and status.may_grow_soon
    assert node.manager.update_pool().state is GrowthState.OK


def test_a_failed_assignment_is_retried_with_one_address() -> None:
    node = make_node()
    node.cloud.fail("assign_ips", CloudError("boom", code="InternalError"))
    node.manager.update_pool()
    assert node.cloud.calls[:2] == ["assign_ips", "assign_ips"]
    assert len(node.store_cidrs()) >= 1
    assert node.store_cidrs() == node.ec2_cidrs()


def test_private_ip_limit_exceeded_resyncs_the_eni_from_ec2() -> None:
    node = make_node()
    hidden = [node.cloud.add_ip_behind_our_back(node.primary.eni_id) for _ in range(3)]
    node.manager.update_pool()
    assert {IPv4Network(ip) for ip in hidden} <= node.store.cidrs_of(node.primary.eni_id)
    assert "describe_enis" in node.cloud.calls


def test_no_eni_slots_is_reported_with_what_to_do() -> None:
    node = make_node()
    node.manager.update_pool()
    node.pods(9)
    status = node.manager.update_pool()
    assert len(node.store.eni_ids()) == 3
    assert status.state is GrowthState.NO_ENI_SLOTS
    assert "MAX_ENI" in status.message


def test_at_max_pods_the_pool_stops_growing() -> None:
    node = make_node(PoolConfig(max_enis=3, max_ips_per_eni=3, max_pods=3))
    node.manager.update_pool()
    node.pods(3)
    assert node.manager.update_pool().state is GrowthState.AT_MAX_PODS
    assert node.cloud.calls == ["assign_ips"]


def test_addresses_go_back_at_most_every_30_seconds_and_enter_the_reconcile_cooldown() -> None:
    node = make_node(PoolConfig(max_enis=3, max_ips_per_eni=10, warm_ip_target=1), ipv4_per_eni=11)
    node.manager.update_pool()
    pods = node.pods(4)
    assert len(node.store_cidrs()) == 5
    for pod in pods:
        node.store.release_pod(pod)
    node.clock.advance(31)  # past IP_COOLDOWN_PERIOD
    node.manager.update_pool()
    assert node.ec2_cidrs() == node.store_cidrs() and len(node.store_cidrs()) == 1
    assert node.cloud.calls.count("unassign") == 1
    released = {IPv4Network(p) for p in pods} - node.store_cidrs()
    assert len(released) == 4 and all(node.cooldown.active(c) for c in released)
    # A second shrink needs 30 s to pass even when the pool is too high again.
    extra = node.cloud.add_ip_behind_our_back(node.primary.eni_id)
    node.store.add_cidrs(node.primary.eni_id, [IPv4Network(extra)], is_prefix=False)
    node.manager.update_pool()
    assert node.cloud.calls.count("unassign") == 1
    node.clock.advance(30)
    node.manager.update_pool()
    assert node.cloud.calls.count("unassign") == 2


def test_an_unused_eni_is_freed_after_its_minimum_age_one_per_iteration() -> None:
    node = make_node()
    node.manager.update_pool()
    pods = node.pods(7)
    assert len(node.store.eni_ids()) == 3
    for pod in pods:
        node.store.release_pod(pod)
    node.clock.advance(30)  # cooldown over, ENIs still younger than 60 s
    node.manager.update_pool()
    assert "free_eni" not in node.cloud.calls
    node.clock.advance(31)
    node.manager.update_pool()
    assert node.cloud.calls.count("free_eni") == 1
    freed = node.network.torn_down[0]
    assert node.cooldown.active(freed)
    node.manager.update_pool()
    assert node.cloud.calls.count("free_eni") == 2  # 6 available was still WARM_ENI_TARGET + 1 ENIs' worth
    node.manager.update_pool()
    assert (
        node.cloud.calls.count("free_eni") == 2
    )  # the primary ENI alone holds WARM_ENI_TARGET's 3 addresses
    assert node.store.eni_ids() == node.cloud.eni_ids() == {node.primary.eni_id}


@pytest.mark.parametrize("opt_in", [False, True])
def test_unschedulable_node_grows_only_with_aws_manage_enis_non_schedulable(opt_in: bool) -> None:
    node = make_node(schedulable=lambda: False, policy=PoolPolicy(manage_enis_non_schedulable=opt_in))
    status = node.manager.update_pool()
    if opt_in:
        assert status.state is GrowthState.OK and node.cloud.calls == ["assign_ips"]
    else:
        assert status.state is GrowthState.UNSCHEDULABLE and node.cloud.calls == []
        assert "AWS_MANAGE_ENIS_NON_SCHEDULABLE" in status.message


def test_provisioning_disabled_changes_nothing() -> None:
    node = make_node(policy=PoolPolicy(provisioning_enabled=False))
    assert node.manager.update_pool().state is GrowthState.PROVISIONING_DISABLED
    assert node.cloud.calls == []


def test_terminating_stops_every_change() -> None:
    node = make_node()
    node.manager.terminate()
    assert node.manager.update_pool().state is GrowthState.TERMINATING
    node.clock.advance(3600)
    assert node.manager.reconcile_if_idle() is False
    assert node.cloud.calls == []


def test_reconcile_runs_only_after_60_idle_seconds() -> None:
    node = make_node()
    node.manager.update_pool()
    node.clock.advance(59)
    assert node.manager.reconcile_if_idle() is False
    node.clock.advance(2)
    assert node.manager.reconcile_if_idle() is True
    assert node.manager.reconcile_if_idle() is False  # the reconcile itself counts as activity


def test_an_eni_whose_host_setup_failed_is_picked_up_by_the_reconciler() -> None:
    node = make_node(PoolConfig(**T3_SMALL, warm_ip_target=2, minimum_ip_target=5))
    node.network.fail_setup = 1
    status = node.manager.update_pool()
    orphan = node.cloud.eni_ids() - node.store.eni_ids()
    assert len(orphan) == 1 and node.cloud.calls.count("allocate_eni") == 1  # no second ENI stranded
    assert status.state is GrowthState.ENI_SETUP_FAILED and orphan == {status.detail}
    node.clock.advance(61)
    node.manager.reconcile_if_idle()
    assert orphan <= node.store.eni_ids() and orphan <= node.network.set_up


def test_wake_if_low_reports_and_signals() -> None:
    node = make_node()
    assert node.manager.wake_if_low(node.store.snapshot()) is True
    node.manager.update_pool()
    assert node.manager.wake_if_low(node.store.snapshot()) is False


def test_the_loop_wakes_at_once_when_an_allocation_drains_the_pool() -> None:
    # Iterations are an hour apart, so only the wake-up can explain the growth.
    node = make_node(timers=PoolTimers(half_interval_s=3600.0))
    grown = threading.Event()
    node.cloud.on_call = lambda name: grown.set()
    node.manager.start()
    try:
        node.manager.wake()
        assert grown.wait(10.0)
        deadline = time.monotonic() + 10.0
        while len(node.store_cidrs()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(node.store_cidrs()) == 3
    finally:
        node.manager.stop()


def test_prefix_mode_grows_by_prefixes() -> None:
    cfg = PoolConfig(
        max_enis=3, max_ips_per_eni=144, max_prefixes_per_eni=9, prefix_delegation=True, warm_prefix_target=1
    )
    node = make_node(cfg, ipv4_per_eni=10)
    node.manager.update_pool()
    assert node.cloud.calls == ["assign_prefixes"]
    assert [c.prefixlen for c in node.store_cidrs()] == [28]
    node.pods(1, prefix_mode=True)
    assert node.cloud.calls == ["assign_prefixes", "assign_prefixes"]
    assert node.store_cidrs() == node.ec2_cidrs()


def test_custom_networking_enis_come_from_the_eniconfig_subnet() -> None:
    cfg = PoolConfig(**T3_SMALL, custom_networking=True)
    node = make_node(cfg, policy=PoolPolicy(subnet_id="subnet-0pods", security_group_ids=("sg-1",)))
    node.manager.update_pool()
    new = node.store.eni_ids() - {node.primary.eni_id}
    assert len(new) == 1 and node.cloud.eni(new.pop()).subnet_id == "subnet-0pods"
    assert node.store.cidrs_of(node.primary.eni_id) == set()


def test_concurrent_allocations_and_the_running_loop_keep_ec2_and_the_datastore_in_step() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=9, max_pods=27, warm_ip_target=2)
    node = make_node(cfg, ipv4_per_eni=10, timers=PoolTimers(half_interval_s=0.001))
    node.manager.start()
    got: list[IPv4Address] = []
    try:
        deadline = time.monotonic() + 20.0
        while len(got) < 25 and time.monotonic() < deadline:
            ip = node.store.assign_pod()
            if ip is None:
                node.manager.wake()
                time.sleep(0.001)
                continue
            got.append(ip)
            node.manager.wake_if_low(node.store.snapshot())
    finally:
        node.manager.stop()
    assert len(got) == 25 and len(set(got)) == 25
    assert node.store_cidrs() == node.ec2_cidrs()
    assert set(got) <= {c.network_address for c in node.ec2_cidrs()}
