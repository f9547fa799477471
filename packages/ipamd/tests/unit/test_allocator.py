"""The allocator: assign/release/lookup, readiness, waking the pool, waiting while it grows, reasons."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.allocator import Allocation, Allocator, NoAddressError, NotReady
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.cni.ports import PodAddressAllocator
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.ipamd.ports import EniRecord


class Pool:
    """A pool manager stand-in: records wakes; when growing, adds a CIDR to the datastore on wake."""

    def __init__(self, ds: DataStore, status: PoolStatus | None = None) -> None:
        self.ds = ds
        self.status = status or PoolStatus()
        self.wakes = 0
        self.low_checks: list[PoolSnapshot] = []
        self.grow_with: list[IPv4Network] = []
        self.waiting_now = 0
        self.most_waiting = 0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self.waiting_now += 1
        self.most_waiting = max(self.most_waiting, self.waiting_now)
        try:
            yield
        finally:
            self.waiting_now -= 1

    def wake(self) -> None:
        self.wakes += 1
        if self.grow_with:
            cidr = self.grow_with.pop(0)
            threading.Timer(0.05, lambda: self.ds.add_cidrs("eni-2", [cidr], is_prefix=False)).start()

    def wake_if_low(self, snapshot: PoolSnapshot) -> bool:
        self.low_checks.append(snapshot)
        low = snapshot.available_ips < 1
        if low:
            self.wake()
        return low


def setup(
    cidrs: int = 1, status: PoolStatus | None = None, cooldown: float = 30
) -> tuple[Allocator, Pool, DataStore, FakeClock]:
    clock = FakeClock()
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=clock, cooldown_s=cooldown)
    ds.add_eni(
        EniRecord(eni_id="eni-1", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_eni(EniRecord(eni_id="eni-2", device_number=2, primary_ip=IPv4Address("10.0.0.20")))
    ds.add_cidrs("eni-2", [IPv4Network(f"10.0.0.{21 + i}/32") for i in range(cidrs)], is_prefix=False)
    pool = Pool(ds, status)
    alloc = Allocator(
        datastore=ds, pool=pool, metrics=IpamdMetrics(with_process_metrics=False), default_timeout_s=0.3
    )
    alloc.mark_ready()
    return alloc, pool, ds, clock


def add(alloc: Allocator, n: int, timeout_s: float | None = None) -> Allocation:
    return alloc.assign(
        network="aws-cni",
        container_id=f"c{n}",
        ifname="eth0",
        pod_namespace="default",
        pod_name=f"p{n}",
        timeout_s=timeout_s,
    )


def test_assign_lookup_release() -> None:
    alloc, _, _, _ = setup(cidrs=2)
    a = add(alloc, 1)
    assert a == Allocation(ip=IPv4Address("10.0.0.21"), device_number=2, route_table=3, eni_id="eni-2")
    assert add(alloc, 1) == a  # idempotent
    assert alloc.lookup(network="aws-cni", container_id="c1", ifname="eth0") == a
    assert [p.allocation for p in alloc.allocations()] == [a]
    assert alloc.allocations()[0].metadata.name == "p1"
    assert alloc.release(network="aws-cni", container_id="c1", ifname="eth0") == a
    assert alloc.release(network="aws-cni", container_id="c1", ifname="eth0") is None  # DEL is idempotent
    assert alloc.lookup(network="aws-cni", container_id="c1", ifname="eth0") is None


def test_assignment_that_drains_the_pool_wakes_the_manager() -> None:
    alloc, pool, _, _ = setup(cidrs=2)
    add(alloc, 1)
    assert pool.wakes == 0 and pool.low_checks[-1].available_ips == 1
    add(alloc, 2)
    assert pool.wakes == 1


def test_empty_pool_waits_while_growing() -> None:
    alloc, pool, _, _ = setup(cidrs=1, status=PoolStatus(state=GrowthState.GROWING))
    add(alloc, 1)
    pool.grow_with = [IPv4Network("10.0.0.30/32")]
    got = add(alloc, 2, timeout_s=10)
    assert got.ip == IPv4Address("10.0.0.30")
    # while it waited the pool counted it, so it grew for it, not only for its warm target
    assert pool.most_waiting == 1 and pool.waiting_now == 0


def test_adds_waiting_together_are_all_counted_as_demand() -> None:
    alloc, pool, _, _ = setup(cidrs=1, status=PoolStatus(state=GrowthState.GROWING))
    add(alloc, 1)
    waiters = [threading.Thread(target=lambda n=n: add(alloc, n, timeout_s=5)) for n in range(2, 5)]
    for t in waiters:
        t.start()
    deadline = time.monotonic() + 5
    while pool.waiting_now < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.waiting_now == 3
    pool.grow_with = [IPv4Network(f"10.0.0.{30 + n}/32") for n in range(3)]
    for _ in range(3):
        pool.wake()
    for t in waiters:
        t.join(10)
    assert pool.waiting_now == 0


def test_empty_pool_fails_fast_with_the_reason_when_it_cannot_grow_now() -> None:
    status = PoolStatus(state=GrowthState.SUBNET_EXHAUSTED, subnet_ids=("subnet-0abc",), retry_after_s=10.0)
    alloc, pool, _, _ = setup(cidrs=1, status=status)
    add(alloc, 1)
    with pytest.raises(NoAddressError) as err:
        add(alloc, 2, timeout_s=60)  # must not wait 60 s
    text = str(err.value)
    assert "subnet-0abc" in text and "1 of 1 addresses" in text and "p2" in text and "in 10 s" in text
    # the subnet rests for a while, the pool can grow after: try again later (CNI 11), not a hard error
    assert err.value.retryable and err.value.status is status
    assert pool.wakes >= 1


def test_a_pool_that_can_never_grow_is_not_retryable() -> None:
    alloc, _, _, _ = setup(cidrs=1, status=PoolStatus(state=GrowthState.NO_ENI_SLOTS))
    add(alloc, 1)
    with pytest.raises(NoAddressError) as err:
        add(alloc, 2, timeout_s=60)
    assert not err.value.retryable


@pytest.mark.parametrize(
    "state,needle",
    [
        (GrowthState.AT_MAX_PODS, "maximum number of pods"),
        (GrowthState.NO_ENI_SLOTS, "no more ENIs"),
        (GrowthState.PROVISIONING_DISABLED, "DISABLE_NETWORK_RESOURCE_PROVISIONING"),
    ],
)
def test_reasons(state: GrowthState, needle: str) -> None:
    alloc, _, _, _ = setup(cidrs=0, status=PoolStatus(state=state))
    with pytest.raises(NoAddressError, match=needle):
        add(alloc, 1)


def test_growing_pool_that_never_delivers_times_out_retryable() -> None:
    alloc, _, _, _ = setup(
        cidrs=0, status=PoolStatus(state=GrowthState.THROTTLED, detail="RequestLimitExceeded")
    )
    with pytest.raises(NoAddressError) as err:
        add(alloc, 1, timeout_s=0.2)
    assert err.value.retryable and "after waiting" in str(err.value) and "throttling" in str(err.value)


def test_waits_for_an_address_leaving_cooldown() -> None:
    status = PoolStatus(state=GrowthState.AT_MAX_PODS)
    alloc, pool, _, clock = setup(cidrs=1, status=status, cooldown=30)
    add(alloc, 1)
    alloc.release(network="aws-cni", container_id="c1", ifname="eth0")
    with pytest.raises(NoAddressError, match="cooldown"):  # 30 s away, beyond the timeout
        add(alloc, 2, timeout_s=1)
    clock.advance(29.95)  # now 50 ms away: worth waiting for
    got: list[Allocation] = []
    t = threading.Thread(target=lambda: got.append(add(alloc, 2, timeout_s=5)))
    t.start()
    threading.Timer(0.05, lambda: clock.advance(1)).start()
    t.join(10)
    assert got and got[0].ip == IPv4Address("10.0.0.21")
    assert pool.most_waiting == 0  # waiting for cooldown is not a reason to grow the pool (as upstream)


def test_not_ready_until_marked() -> None:
    clock = FakeClock()
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=clock)
    alloc = Allocator(datastore=ds, pool=Pool(ds))
    ready, reason = alloc.readiness()
    assert not ready and "checkpoint" in reason
    with pytest.raises(NotReady):
        add(alloc, 1)
    alloc.mark_ready()
    assert alloc.readiness() == (True, "ready")


def test_terminating_is_not_ready() -> None:
    alloc, pool, _, _ = setup()
    pool.status = PoolStatus(state=GrowthState.TERMINATING)
    assert alloc.readiness()[0] is False


def test_status_is_not_ready_when_full_and_unable_to_grow() -> None:
    alloc, _, _, _ = setup(cidrs=1, status=PoolStatus(state=GrowthState.AT_MAX_PODS))
    assert alloc.readiness() == (True, "ready")  # one free address left
    add(alloc, 1)
    ready, reason = alloc.readiness()
    assert ready is False and "cannot grow" in reason


def test_metrics_follow_requests() -> None:
    alloc, _, _, _ = setup(cidrs=1, status=PoolStatus(state=GrowthState.AT_MAX_PODS))
    add(alloc, 1)
    with pytest.raises(NoAddressError):
        add(alloc, 2)
    alloc.release(network="aws-cni", container_id="c1", ifname="eth0")
    text = alloc._metrics.render().decode()  # type: ignore[union-attr]
    assert "awscni_add_ip_req_count 2.0" in text
    assert "awscni_no_available_ip_addresses 1.0" in text
    assert 'awscni_del_ip_req_count{reason="PodDeleted"} 1.0' in text
    assert "awscni_assigned_ip_addresses 0.0" in text and "awscni_total_ip_addresses 1.0" in text


def test_allocator_is_the_cni_endpoints_port() -> None:
    alloc, _, _, _ = setup()
    port: PodAddressAllocator = alloc
    members = [n for n in vars(PodAddressAllocator) if not n.startswith("_")]
    assert members and all(callable(getattr(port, n)) for n in members)


def test_per_eni_and_per_cidr_gauges_follow_each_assignment_and_release() -> None:
    alloc, _, _, _ = setup(cidrs=3)
    add(alloc, 1)
    add(alloc, 2)
    text = alloc._metrics.render().decode()  # type: ignore[union-attr]
    assert 'awscni_assigned_ip_per_eni{eni="eni-2"} 2.0' in text
    assert 'awscni_assigned_ip_per_cidr{cidr="10.0.0.21/32"} 1.0' in text
    assert 'awscni_assigned_ip_per_cidr{cidr="10.0.0.22/32"} 1.0' in text
    assert "10.0.0.23/32" not in text  # untouched CIDRs wait for the daemon's full refresh
    assert "awscni_assigned_ip_addresses 2.0" in text and "awscni_total_ip_addresses 3.0" in text
    alloc.release(network="aws-cni", container_id="c1", ifname="eth0")
    text = alloc._metrics.render().decode()  # type: ignore[union-attr]
    assert 'awscni_assigned_ip_per_eni{eni="eni-2"} 1.0' in text
    assert 'awscni_assigned_ip_per_cidr{cidr="10.0.0.21/32"} 0.0' in text
    assert "awscni_assigned_ip_addresses 1.0" in text


def test_a_pending_assignment_counts_and_wakes_like_an_assignment() -> None:
    alloc, pool, _, _ = setup(cidrs=2)
    pending = alloc.assign_pending(
        network="aws-cni", container_id="c1", ifname="eth0", pod_namespace="default", pod_name="p1"
    )
    pending.wait_written(5)
    assert pending.allocation == alloc.lookup(network="aws-cni", container_id="c1", ifname="eth0")
    assert pool.low_checks[-1].available_ips == 1
    assert "awscni_assigned_ip_addresses 1.0" in alloc._metrics.render().decode()  # type: ignore[union-attr]
