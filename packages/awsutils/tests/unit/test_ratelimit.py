from __future__ import annotations

import threading

import pytest
from vpccni.awsutils.ratelimit import (
    MUTATING,
    READ,
    Ec2RateLimiter,
    RateLimitConfig,
    TokenBucket,
    category_of,
)
from vpccni.awsutils.testing import FakeClock, RecordingObserver


def test_categories() -> None:
    assert category_of("DescribeNetworkInterfaces") == READ
    for api in ("CreateNetworkInterface", "AssignPrivateIpAddresses", "CreateTags", "DeleteNetworkInterface"):
        assert category_of(api) == MUTATING


def test_burst_then_paced_and_waits_are_reported() -> None:
    clock = FakeClock()
    observer = RecordingObserver()
    limiter = Ec2RateLimiter(
        RateLimitConfig(mutating_qps=5, mutating_burst=3, read_qps=20, read_burst=40),
        clock=clock,
        observer=observer,
    )
    waits = [limiter.acquire("AssignPrivateIpAddresses") for _ in range(5)]
    assert waits[:3] == [0, 0, 0]
    assert waits[3] == pytest.approx(0.2)  # one token refills in 1/5 s
    assert waits[4] == pytest.approx(0.2)  # the clock already advanced by the first wait
    assert observer.throttle_waits == [(MUTATING, pytest.approx(0.2)), (MUTATING, pytest.approx(0.2))]
    assert clock.sleeps == [pytest.approx(0.2), pytest.approx(0.2)]
    # Reads have their own bucket: unaffected by the mutating debt.
    assert limiter.acquire("DescribeSubnets") == 0


def test_idle_refills_to_burst_only() -> None:
    clock = FakeClock()
    limiter = Ec2RateLimiter(RateLimitConfig(mutating_qps=1, mutating_burst=2), clock=clock)
    clock.advance(1000)
    assert [limiter.acquire("CreateTags") for _ in range(3)] == [0, 0, pytest.approx(1.0)]


def test_concurrent_callers_queue_fairly() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, capacity=5, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        w = bucket.reserve()
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 5 free tokens, then 15 reservations spaced 0.1 s apart: every caller gets a distinct slot.
    assert sorted(waits) == pytest.approx([0.0] * 5 + [0.1 * i for i in range(1, 16)])


def test_zero_qps_disables_the_bucket() -> None:
    limiter = Ec2RateLimiter(RateLimitConfig(read_qps=0, read_burst=1), clock=FakeClock())
    assert all(limiter.acquire("DescribeInstances") == 0 for _ in range(100))
