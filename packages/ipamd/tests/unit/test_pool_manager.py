"""The pool manager against stateful fakes of EC2, the node network and the datastore."""

from __future__ import annotations

import contextlib
import random
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
from vpccni.ipamd.pool.testing_cloud import FakeCloud
from vpccni.ipamd.pool.throttle_backoff import ThrottleBackoff
from vpccni.ipamd.ports import CloudError, EniDescription, EniRequest
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
    # One plan: the new ENI starts attaching while the primary's addresses are assigned.
    assert sorted(node.cloud.calls) == ["allocate_eni", "assign_ips"]
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
    assert "subnet-0fake" in status.message and "in 4" in status.message  # "asks again in 4 s"
    assert status.retryable and not status.may_grow_soon  # ADD fails now, with code 11, not 999
    assert node.cloud.calls == ["assign_ips", "allocate_eni"]  # no other subnet could take a new ENI
    node.clock.advance(2)
    assert node.manager.update_pool().state is GrowthState.SUBNET_EXHAUSTED
    assert node.cloud.calls == ["assign_ips", "allocate_eni"], "no EC2 call while every subnet rests"
    node.clock.advance(3)
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
    for base, rest in zip([4, 8, 16, 32, 64, 120], rests, strict=True):
        assert base <= rest <= base * 1.1  # up to 10 % of jitter, so failed nodes do not return together
    assert node.manager.update_pool().state is GrowthState.OK


def test_a_transient_shortage_on_the_only_subnet_costs_seconds_not_minutes() -> None:
    # Found by nox -s chaos: InsufficientFreeAddressesInSubnet three times in a row (then room again) on a
    # one-subnet node made ADDs wait 75 s, the rests (10 + 20 + 40 s) outlasting the shortage.
    node = make_node()
    node.cloud.fail("assign_ips", CloudError("no room", code="InsufficientFreeAddressesInSubnet"), times=3)
    started = node.clock.monotonic()
    while node.manager.update_pool().state is not GrowthState.OK:
        node.clock.advance(1.0)  # the pool monitor's tick
    assert node.clock.monotonic() - started <= 32
    assert len(node.store_cidrs()) == 3


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


def test_throttling_backs_off_with_jitter_and_serves_waiting_pods_before_warm_targets() -> None:
    node = make_node()
    node.manager.update_pool()
    for _ in range(2):
        node.store.assign_pod()  # 1 address left: below WARM_ENI_TARGET's 3
    node.cloud.fail("allocate_eni", CloudError("slow down", code="RequestLimitExceeded"))
    status = node.manager.update_pool()
    assert status.state is GrowthState.THROTTLED and status.may_grow_soon
    assert status.retry_after_s is not None and 0 <= status.retry_after_s <= 1.0  # full jitter up to 1 s
    calls = list(node.cloud.calls)
    assert node.manager.update_pool().state is GrowthState.THROTTLED  # woken again at once: no retry
    node.clock.advance(1.0)
    status = node.manager.update_pool()
    assert status.state is GrowthState.THROTTLED and "warm targets wait" in status.message
    assert node.cloud.calls == calls
    node.store.assign_pod()
    with node.manager.waiting():  # a pod waits for an address: it is served now
        node.manager.update_pool()
    assert node.cloud.calls == [*calls, "allocate_eni"] and len(node.store_cidrs()) == 6
    node.clock.advance(30)
    node.store.assign_pod()
    assert node.manager.update_pool().state is GrowthState.OK  # the warm target again after the quiet
    assert len(node.store_cidrs()) == 9


def test_throttles_in_a_row_double_the_back_off_and_success_forgets_them() -> None:
    draws = iter([1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.25, 1.0])
    backoff = ThrottleBackoff(first_s=1.0, max_s=30.0, jitter=lambda: next(draws))
    waits = [backoff.throttled(100.0) for _ in range(7)]
    assert waits == [1.0, 2.0, 2.0, 8.0, 16.0, 30.0, 7.5]  # full jitter of 1, 2, 4, ... up to 30 s
    assert backoff.resting_for(100.0) == 30.0 and backoff.recent(129.0, 30.0)
    backoff.succeeded()
    assert backoff.throttled(200.0) == 1.0  # a success forgets the streak
    assert not backoff.recent(231.0, 30.0)


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


def test_an_eni_attached_behind_the_pools_back_is_read_back_when_ec2_says_no_slot_is_left() -> None:
    """The attach a killed ipamd sent completes after node init looked: the pool, sure it has a free slot,
    is refused with AttachmentLimitExceeded and reads the ENIs back at once (not after an idle minute)."""
    node = make_node()
    node.manager.update_pool()
    late = [node.cloud.add_existing_eni(device_number=d, ips=2) for d in (1, 2)]  # all three slots taken
    node.pods(2)  # the pool wants a new ENI after the second: EC2 refuses it
    assert node.cloud.calls.count("allocate_eni") == 1 and "describe_enis" in node.cloud.calls
    assert {e.eni_id for e in late} <= node.store.eni_ids()
    assert node.store_cidrs() == node.ec2_cidrs()
    node.pods(5)  # the late ENIs' addresses serve pods at once
    assert node.manager.update_pool().state is GrowthState.NO_ENI_SLOTS
    assert node.cloud.calls.count("allocate_eni") == 1


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


def test_reconcile_runs_only_after_60_idle_seconds_and_up_to_a_tenth_more() -> None:
    node = make_node()
    node.manager.update_pool()
    node.clock.advance(59)
    assert node.manager.reconcile_if_idle() is False
    node.clock.advance(7)
    assert node.manager.reconcile_if_idle() is True
    assert node.manager.reconcile_if_idle() is False  # the reconcile itself counts as activity
    waits = [
        PoolManager(
            config=PoolConfig(**T3_SMALL), store=node.store, cloud=node.cloud, network=node.network,
            cooldown=node.cooldown, clock=node.clock, rng=random.Random(seed),
        )._reconcile_idle_s
        for seed in range(50)
    ]  # fmt: skip
    assert all(60 <= w <= 66 for w in waits) and max(waits) - min(waits) > 3  # nodes spread out


def test_an_eni_whose_host_setup_failed_is_picked_up_by_the_reconciler() -> None:
    node = make_node(PoolConfig(**T3_SMALL, warm_ip_target=2, minimum_ip_target=5))
    node.network.fail_setup = 1
    status = node.manager.update_pool()
    orphan = node.cloud.eni_ids() - node.store.eni_ids()
    assert len(orphan) == 1 and node.cloud.calls.count("allocate_eni") == 1  # no second ENI stranded
    assert status.state is GrowthState.ENI_SETUP_FAILED and orphan == {status.detail}
    node.clock.advance(67)
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


class GatedCloud:
    """The fake EC2 behind a gate: allocations wait for `opened`, and the most in flight at once is kept."""

    def __init__(self, cloud: FakeCloud) -> None:
        self._cloud = cloud
        self.opened = threading.Event()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def allocate_eni(self, request: EniRequest) -> EniDescription:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            assert self.opened.wait(10), "the test never opened the gate"
            return self._cloud.allocate_eni(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def __getattr__(self, name: str) -> object:
        return getattr(self._cloud, name)


def test_adds_waiting_for_addresses_start_every_eni_they_need_at_once() -> None:
    fake = FakeNode.create(max_enis=6, ipv4_per_eni=4)
    gated = GatedCloud(fake.cloud)
    manager = PoolManager(
        config=PoolConfig(max_enis=6, max_ips_per_eni=3, max_pods=30),
        store=fake.store, cloud=gated, network=fake.network, cooldown=fake.cooldown, clock=fake.clock,
        reconciler=fake.make_reconciler(),
    )  # fmt: skip
    manager.update_pool()
    for _ in range(3):
        assert fake.store.assign_pod() is not None  # the primary's 3 addresses are taken
    with contextlib.ExitStack() as waiting:
        for _ in range(7):
            waiting.enter_context(manager.waiting())
        assert manager.update_pool(wait=False).state is GrowthState.GROWING
        deadline = time.monotonic() + 5
        while gated.in_flight < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        # 7 waiting pods: 3 ENIs of 3 addresses, all attaching at once
        assert gated.in_flight == 3
        manager.update_pool(wait=False)  # woken again meanwhile: nothing is started twice
        time.sleep(0.05)
        assert gated.in_flight == 3 and fake.cloud.calls.count("allocate_eni") == 0
        gated.opened.set()
        manager.update_pool()  # waits for what is in flight, then plans again
    # the pods' 3 ENIs together, then WARM_ENI_TARGET's free addresses: one more ENI, after them
    assert gated.most_in_flight == 3 and fake.cloud.calls.count("allocate_eni") == 4
    assert len(fake.store.eni_ids()) == 5 and fake.network.set_up == fake.store.eni_ids() - {
        fake.primary.eni_id
    }
    assert fake.store_cidrs() == fake.ec2_cidrs()


def test_queued_adds_are_demand_too() -> None:
    node = make_node()
    node.manager.update_pool()
    for _ in range(3):
        node.store.assign_pod()
    node.manager.queued_adds(3)  # the CNI endpoint holds 3 ADDs for its busy workers
    node.manager.update_pool()
    assert node.cloud.calls.count("allocate_eni") == 2  # 3 pods and WARM_ENI_TARGET's 3 addresses
    node.manager.queued_adds(-3)
    node.manager.update_pool()
    assert node.cloud.calls.count("allocate_eni") == 2


def test_a_throttle_the_ec2_client_retried_still_sends_the_pool_pods_first_one_eni_at_a_time() -> None:
    fake = FakeNode.create(max_enis=6, ipv4_per_eni=4)
    throttled_at = [float("-inf")]
    gated = GatedCloud(fake.cloud)
    manager = PoolManager(
        config=PoolConfig(max_enis=6, max_ips_per_eni=3, max_pods=30),
        store=fake.store, cloud=gated, network=fake.network, cooldown=fake.cooldown, clock=fake.clock,
        account_throttled_at=lambda: throttled_at[0],
    )  # fmt: skip
    manager.update_pool()
    for _ in range(3):
        fake.store.assign_pod()
    throttled_at[0] = fake.clock.monotonic()  # the EC2 client met RequestLimitExceeded (and retried)
    with contextlib.ExitStack() as waiting:
        for _ in range(7):
            waiting.enter_context(manager.waiting())
        manager.update_pool(wait=False)
        deadline = time.monotonic() + 5
        while gated.in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert gated.in_flight == 1  # 7 pods need 3 ENIs, but while EC2 is short of tokens: one at a time
        gated.opened.set()
        manager.update_pool()
        for _ in range(7):
            fake.store.assign_pod()  # the waiting pods take their addresses
    # the pods got their ENIs; the warm target's fourth waits for a quiet account
    assert fake.cloud.calls.count("allocate_eni") == 3 and gated.most_in_flight == 1
    assert manager.update_pool().state is GrowthState.THROTTLED
    fake.clock.advance(31)
    manager.update_pool()
    assert fake.cloud.calls.count("allocate_eni") == 4


# --- IPv6 mode: no warm pool, only the primary ENI's /80 ----------------------------------------------------

IPV6 = {**T3_SMALL, "ipv6": True, "prefix_delegation": True}


def test_ipv6_mode_assigns_one_prefix_and_never_grows_a_warm_pool() -> None:
    node = make_node(PoolConfig(**IPV6))
    assert node.manager.update_pool().state is GrowthState.OK
    (prefix,) = node.store.cidrs_of(node.primary.eni_id)
    assert prefix.version == 6 and prefix.prefixlen == 80
    pods = node.pods(20, prefix_mode=True)  # more than a warm pool of T3_SMALL could ever hold
    assert all(ip in prefix for ip in pods)
    assert node.cloud.calls == ["assign_ipv6_prefix"]  # one EC2 call, no ENI, no secondary IP


def test_ipv6_mode_puts_a_prefix_back_when_ec2_lost_it() -> None:
    node = make_node(PoolConfig(**IPV6))
    node.manager.update_pool()
    node.cloud.remove_ipv6_prefixes_behind_our_back(node.primary.eni_id)
    node.reconciler.run()  # IMDS and EC2 agree it is gone
    assert node.store.cidrs_of(node.primary.eni_id) == set()
    assert node.manager.update_pool().state is GrowthState.OK
    assert node.store.cidrs_of(node.primary.eni_id) == set(node.cloud.eni(node.primary.eni_id).ipv6_prefixes)


def test_ipv6_mode_reports_ec2_refusals_and_disabled_provisioning() -> None:
    node = make_node(PoolConfig(**IPV6))
    node.cloud.fail("assign_ipv6_prefix", CloudError("slow down", code="RequestLimitExceeded"))
    assert node.manager.update_pool().state is GrowthState.THROTTLED
    assert node.manager.update_pool().state is GrowthState.OK  # retried on the next iteration
    frozen = make_node(PoolConfig(**IPV6), policy=PoolPolicy(provisioning_enabled=False))
    assert frozen.manager.update_pool().state is GrowthState.PROVISIONING_DISABLED
    assert frozen.cloud.calls == []
