"""When the chaos suite kills the agent, and the sizes of its variants."""

from __future__ import annotations

from collections import Counter

from vpccni.testbed.chaos.moments import SHARES, Moment, schedule
from vpccni.testbed.chaos.plan import Plan


def test_every_targeted_moment_comes_in_proportion_and_the_rest_is_random() -> None:
    moments = Counter(schedule(50, seed=1))
    assert sum(moments.values()) == 50
    for name, share in SHARES.items():
        assert moments[Moment(name)] == max(1, round(share * 50))
    assert moments[Moment.RANDOM] == 50 - sum(max(1, round(s * 50)) for s in SHARES.values())


def test_a_short_run_still_aims_at_every_moment_once() -> None:
    moments = Counter(schedule(8, seed=1))
    assert set(moments) == set(Moment)
    assert moments[Moment.RANDOM] == 8 - sum(max(1, round(s * 8)) for s in SHARES.values())


def test_fewer_rounds_than_moments_never_overflow() -> None:
    assert len(schedule(3, seed=1)) == 3
    assert schedule(0, seed=1) == []


def test_the_schedule_is_reproducible_from_its_seed() -> None:
    assert schedule(20, seed=4) == schedule(20, seed=4)
    assert schedule(20, seed=4) != schedule(20, seed=5)


def test_the_full_run_meets_the_issue_minimums_and_the_short_one_is_smaller() -> None:
    full, short = Plan.full(), Plan.short()
    assert full.kill_rounds >= 50 and full.fuzz_cni_cases >= 10_000
    assert (full.idle_clients, full.slow_clients) == (500, 16)
    assert full.apiserver_down_s == 60 and full.imds_stale_s == 30
    assert short.kill_rounds < full.kill_rounds and short.fuzz_cni_cases < full.fuzz_cni_cases
    assert Plan.soak(3600).soak_s == 3600
