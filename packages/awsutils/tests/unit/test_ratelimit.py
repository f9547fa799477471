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


def test_each_throttle_halves_the_node_s_rate_for_that_action_and_successes_win_it_back() -> None:
    clock = FakeClock()
    limiter = Ec2RateLimiter(RateLimitConfig(mutating_qps=5, mutating_burst=10), clock=clock)
    assert limiter.last_throttle == float("-inf")
    for expected in (2.5, 1.25, 0.625, 0.3125, 0.25, 0.25):  # never below a twentieth: 0.25/s
        limiter.throttled("AttachNetworkInterface")
        assert limiter.rate("AttachNetworkInterface") == pytest.approx(expected)
    assert limiter.last_throttle == clock.monotonic()
    assert limiter.rate("CreateNetworkInterface") == 5  # EC2 meters each action apart: so does the node
    # right after a throttle there is no burst left: the next call waits for the slowed rate
    assert limiter.acquire("AttachNetworkInterface") == pytest.approx(4.0)
    for _ in range(3):
        limiter.succeeded("AttachNetworkInterface")
    assert limiter.rate("AttachNetworkInterface") == pytest.approx(1.75)  # + a tenth of 5/s each
    for _ in range(20):
        limiter.succeeded("AttachNetworkInterface")
    assert limiter.rate("AttachNetworkInterface") == 5


def test_a_disabled_bucket_does_not_adapt() -> None:
    limiter = Ec2RateLimiter(RateLimitConfig(mutating_qps=0), clock=FakeClock())
    limiter.throttled("AttachNetworkInterface")
    assert limiter.rate("AttachNetworkInterface") == 0
    assert all(limiter.acquire("AttachNetworkInterface") == 0 for _ in range(50))
