"""Leader election over one Lease: replicas as electors sharing a fake store and a fake clock."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from vpccni.netpol.controller.leader import LeaderElector, LeaseTimings, micro_time
from vpccni.netpol.testing import FakeLeaseStore

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(store: FakeLeaseStore, name: str, clock: Clock) -> LeaderElector:
    return LeaderElector(
        store=store,
        identity=name,
        timings=LeaseTimings(duration_s=15, renew_deadline_s=10, retry_s=2),
        monotonic=clock,
        wall=lambda: datetime.fromtimestamp(clock.t, UTC),
    )


def test_the_first_replica_takes_a_missing_lease_and_the_second_waits() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert store.record is not None and store.record.holder == "a" and store.record.transitions == 0
    assert store.record.duration_s == 15


def test_the_holder_renews_and_keeps_its_acquire_time() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a = elector(store, "a", clock)
    assert a.try_acquire_or_renew()
    assert store.record is not None
    acquired = store.record.acquired
    clock.t += 2
    assert a.try_acquire_or_renew()
    assert store.record.acquired == acquired
    assert store.record.renewed == micro_time(datetime.fromtimestamp(1002, UTC))


def test_a_standby_takes_over_only_after_a_full_duration_without_renewal_as_it_saw_it() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees the lease now
    clock.t += 14
    assert not b.try_acquire_or_renew()
    clock.t += 2  # 16 s since b saw it change
    assert b.try_acquire_or_renew()
    assert store.record is not None and store.record.holder == "b" and store.record.transitions == 1


def test_renewals_b_sees_keep_it_standing_by_whatever_the_timestamps_say() -> None:
    store, clock = FakeLeaseStore(), Clock()
    # a's wall clock is an hour behind: its renewTime looks stale, yet each renewal is a change b sees.
    a = LeaderElector(
        store=store, identity="a", monotonic=clock, wall=lambda: datetime.fromtimestamp(clock.t - 3600, UTC)
    )
    b = elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    for _ in range(20):
        clock.t += 2
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()


def test_two_replicas_racing_for_an_expired_lease_give_one_winner() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b, c = (elector(store, n, clock) for n in "abc")
    assert a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    c.try_acquire_or_renew()
    clock.t += 20
    # both read the same record; the first update wins, the second's resourceVersion is stale
    record = store.get()
    assert record is not None
    won = [e.try_acquire_or_renew() for e in (b, c)]
    assert won == [True, False]
    assert store.record is not None and store.record.holder == "b"


def test_an_api_outage_is_no_leadership_and_the_holder_steps_down_after_the_renew_deadline() -> None:
    store, clock = FakeLeaseStore(), Clock()
    stop, started = threading.Event(), threading.Event()
    result: list[bool] = []
    a = LeaderElector(
        store=store, identity="a", monotonic=clock, timings=LeaseTimings(renew_deadline_s=10, retry_s=0.01)
    )
    thread = threading.Thread(target=lambda: result.append(a.run(stop, started.set)))
    thread.start()
    assert started.wait(5) and a.leading
    store.outage = True
    clock.t += 5  # within the renew deadline: still leading
    time.sleep(0.1)
    assert a.leading and thread.is_alive()
    clock.t += 6
    thread.join(5)
    assert result == [False] and not a.leading
    stop.set()


def test_run_releases_the_lease_on_stop_so_a_standby_takes_it_at_once() -> None:
    store, clock = FakeLeaseStore(), Clock()
    stop = threading.Event()
    started = threading.Event()
    a = elector(store, "a", clock)
    thread = threading.Thread(target=lambda: a.run(stop, started.set))
    thread.start()
    assert started.wait(5)
    assert a.leading
    stop.set()
    thread.join(5)
    assert store.record is not None and store.record.holder == "" and not a.leading
    b = elector(store, "b", clock)
    assert b.try_acquire_or_renew()  # no 15 s wait: the lease was given up
