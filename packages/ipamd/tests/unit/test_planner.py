"""The planner's functions one by one, on hand-built snapshots (the golden tables drive them end to end)."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Network

import pytest
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.decisions import (
    AllocateEni,
    AssignToEni,
    FreeEni,
    NoAction,
    NoActionReason,
    ReleaseCidrs,
)
from vpccni.ipamd.pool.planner import (
    deletable_eni,
    is_pool_too_high,
    is_pool_too_low,
    plan_decrease,
    plan_free_eni,
    plan_increase,
    prefixes_needed,
    should_remove_extra_enis,
    target_state,
)
from vpccni.ipamd.pool.snapshot import CidrSnapshot, EniSnapshot, PoolSnapshot

_ips = (IPv4Network(f"10.0.{i // 250}.{i % 250 + 1}/32") for i in itertools.count())
_prefixes = IPv4Network("10.1.0.0/16").subnets(new_prefix=28)


def ip(assigned: int = 0, cooldown: int = 0) -> CidrSnapshot:
    return CidrSnapshot(cidr=next(_ips), is_prefix=False, assigned=assigned, in_cooldown=cooldown)


def prefix(assigned: int = 0, cooldown: int = 0) -> CidrSnapshot:
    return CidrSnapshot(cidr=next(_prefixes), is_prefix=True, assigned=assigned, in_cooldown=cooldown)


def eni(dev: int, *cidrs: CidrSnapshot, age: float = 600.0, **kw: bool) -> EniSnapshot:
    return EniSnapshot(
        eni_id=f"eni-{dev}", device_number=dev, is_primary=dev == 0, age_s=age, cidrs=tuple(cidrs), **kw
    )


def pool(*enis: EniSnapshot) -> PoolSnapshot:
    return PoolSnapshot(enis=enis)


IP_MODE = PoolConfig(max_enis=3, max_ips_per_eni=3, max_pods=110)
PD_MODE = PoolConfig(
    max_enis=3,
    max_ips_per_eni=48,
    max_prefixes_per_eni=3,
    max_pods=110,
    prefix_delegation=True,
    warm_eni_target=0,
)


def test_target_state_short_is_the_larger_of_warm_and_minimum_gaps() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=3, warm_ip_target=2, minimum_ip_target=5)
    state = target_state(pool(eni(0, ip(1), ip(), ip())), cfg)  # total 3, available 2
    assert (state.short, state.over, state.enabled) == (2, 0, True)


def test_target_state_over_never_goes_below_the_minimum() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=10, warm_ip_target=1, minimum_ip_target=4)
    state = target_state(pool(eni(0, *(ip() for _ in range(6)))), cfg)  # available 6: 5 over warm, 2 over min
    assert state.over == 2


def test_target_state_in_prefix_mode_counts_whole_free_prefixes() -> None:
    # Upstream's own example: one address assigned, WARM_IP_TARGET=16 needs two prefixes, so none is over.
    cfg = PoolConfig(
        max_enis=3, max_ips_per_eni=48, max_prefixes_per_eni=3, prefix_delegation=True, warm_ip_target=16
    )
    state = target_state(pool(eni(0, prefix(assigned=1), prefix())), cfg)
    assert (state.short, state.over) == (0, 0)
    state = target_state(pool(eni(0, prefix(assigned=1), prefix(), prefix())), cfg)
    assert state.over == 1
    state = target_state(pool(eni(0, prefix(assigned=16))), cfg)
    assert state.short == 1  # 16 addresses short is one prefix


def test_targets_undefined_reports_disabled() -> None:
    assert target_state(pool(eni(0)), IP_MODE).enabled is False


def test_pool_at_max_pods_is_never_low() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=3, max_pods=3, warm_ip_target=5)
    snap = pool(eni(0, ip(1), ip(1), ip(1)))
    assert not is_pool_too_low(snap, cfg)
    assert plan_increase(snap, cfg) == NoAction(reason=NoActionReason.AT_MAX_PODS)


def test_warm_eni_zero_is_low_only_when_nothing_is_available() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=3, warm_eni_target=0)
    assert is_pool_too_low(pool(eni(0, ip(1))), cfg)
    assert not is_pool_too_low(pool(eni(0, ip(1), ip())), cfg)


def test_increase_fills_the_first_eni_with_room_before_attaching_one() -> None:
    snap = pool(eni(0, ip(1), ip(1), ip(1)), eni(1, ip(1)))
    assert plan_increase(snap, IP_MODE) == AssignToEni(eni_id="eni-1", count=2)


def test_increase_with_custom_networking_never_uses_the_primary_eni() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=3, custom_networking=True)
    assert plan_increase(pool(eni(0)), cfg) == AllocateEni(size=3)


def test_trunk_and_excluded_enis_take_no_addresses() -> None:
    snap = pool(eni(0, ip(1), ip(1), ip(1)), eni(1, is_trunk=True), eni(2, excluded=True))
    assert plan_increase(snap, IP_MODE) == NoAction(reason=NoActionReason.NO_ENI_SLOTS)


def test_a_slot_is_kept_for_the_trunk_eni() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=3, reserve_trunk_slot=True)
    snap = pool(eni(0, ip(1), ip(1), ip(1)), eni(1, ip(1), ip(1), ip(1)))
    assert plan_increase(snap, cfg) == NoAction(reason=NoActionReason.NO_ENI_SLOTS)
    assert isinstance(plan_increase(snap, IP_MODE), AllocateEni)


def test_the_trunk_takes_its_reserved_slot_itself_once_attached() -> None:
    cfg = PoolConfig(max_enis=4, max_ips_per_eni=3, reserve_trunk_slot=True)
    full = (eni(0, ip(1), ip(1), ip(1)), eni(1, ip(1), ip(1), ip(1)))
    assert isinstance(plan_increase(pool(*full), cfg), AllocateEni)  # 2 of 4, one kept for the trunk
    with_trunk = pool(*full, eni(2, is_trunk=True))
    assert isinstance(plan_increase(with_trunk, cfg), AllocateEni)  # the trunk's slot is not kept twice
    third = eni(2, ip(1), ip(1), ip(1))
    assert plan_increase(pool(*full, third), cfg) == NoAction(reason=NoActionReason.NO_ENI_SLOTS)


def test_new_eni_size_is_the_shortfall_capped_at_the_eni_limit() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=3, warm_ip_target=10)
    assert plan_increase(pool(eni(0, ip(1), ip(1), ip(1))), cfg) == AllocateEni(size=3)


def test_prefixes_needed_prefers_warm_ip_targets_over_warm_prefix_target() -> None:
    cfg = PoolConfig(
        max_enis=3, max_ips_per_eni=48, max_prefixes_per_eni=3, prefix_delegation=True, warm_prefix_target=3
    )
    assert prefixes_needed(pool(eni(0, prefix())), cfg) == 2
    cfg_ip = PoolConfig(
        max_enis=3,
        max_ips_per_eni=48,
        max_prefixes_per_eni=3,
        prefix_delegation=True,
        warm_prefix_target=3,
        minimum_ip_target=40,
    )
    assert prefixes_needed(pool(eni(0, prefix())), cfg_ip) == 2  # 24 short: two prefixes
    assert plan_increase(pool(eni(0, prefix())), cfg_ip) == AssignToEni(
        eni_id="eni-0", count=2, prefixes=True
    )


def test_plain_warm_eni_target_is_never_too_high() -> None:
    snap = pool(eni(0, ip(), ip(), ip()), eni(1, ip(), ip(), ip()))
    assert not is_pool_too_high(snap, IP_MODE)
    assert plan_decrease(snap, IP_MODE) == NoAction(reason=NoActionReason.POOL_OK)


def test_decrease_frees_up_to_over_from_the_newest_eni_and_skips_busy_or_cooling_addresses() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=5, warm_ip_target=1)
    busy, cooling = ip(1), ip(cooldown=1)
    free_primary = ip()
    free_second = [ip(), ip()]
    snap = pool(eni(0, busy, free_primary, ip()), eni(1, cooling, *free_second))
    # available 5 (the cooling address still counts as available), warm 1: four over, and four are free.
    decision = plan_decrease(snap, cfg)
    assert isinstance(decision, ReleaseCidrs)
    assert decision.releases[0].eni_id == "eni-1"
    assert decision.releases[0].cidrs == tuple(c.cidr for c in free_second)
    assert decision.count == 4
    assert decision.releases[1].eni_id == "eni-0"
    assert cooling.cidr not in {c for r in decision.releases for c in r.cidrs}
    assert busy.cidr not in {c for r in decision.releases for c in r.cidrs}


def test_decrease_in_prefix_mode_keeps_warm_prefix_target_free_prefixes() -> None:
    cfg = PoolConfig(
        max_enis=3, max_ips_per_eni=48, max_prefixes_per_eni=3, prefix_delegation=True, warm_prefix_target=1
    )
    snap = pool(eni(0, prefix(assigned=3), prefix(), prefix()))
    assert is_pool_too_high(snap, cfg)
    decision = plan_decrease(snap, cfg)
    assert isinstance(decision, ReleaseCidrs) and decision.count == 1


def test_nothing_freeable_when_every_spare_address_is_cooling() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=5, warm_ip_target=1)
    snap = pool(eni(0, ip(1), ip(cooldown=1), ip(cooldown=1)))
    assert plan_decrease(snap, cfg) == NoAction(reason=NoActionReason.NOTHING_FREEABLE)


@pytest.mark.parametrize(
    "blocker",
    [
        {"age": 30.0},
        {"cidrs": (ip(cooldown=1),)},
        {"cidrs": (ip(assigned=1),)},
        {"is_trunk": True},
        {"is_efa": True},
    ],
    ids=["younger-than-60s", "cooling-address", "has-a-pod", "trunk", "efa"],
)
def test_deletable_eni_exclusions(blocker: dict[str, object]) -> None:
    cidrs = blocker.pop("cidrs", (ip(), ip(), ip()))
    age = blocker.pop("age", 600.0)
    assert isinstance(cidrs, tuple) and isinstance(age, float)
    snap = pool(eni(0, ip(), ip(), ip()), eni(1, *cidrs, age=age, **blocker))  # type: ignore[arg-type]
    assert deletable_eni(snap, IP_MODE) is None


def test_the_primary_eni_is_never_deletable() -> None:
    assert deletable_eni(pool(eni(0)), IP_MODE) is None


def test_an_unused_old_eni_is_freed_when_warm_eni_target_is_exceeded() -> None:
    snap = pool(eni(0, ip(), ip(), ip()), eni(1, ip(), ip(), ip()))  # 6 available >= (1+1) * 3
    assert should_remove_extra_enis(snap, IP_MODE)
    assert plan_free_eni(snap, IP_MODE) == FreeEni(eni_id="eni-1")
    lean = pool(eni(0, ip(1), ip(), ip()), eni(1, ip(), ip(), ip()))
    assert plan_free_eni(lean, IP_MODE) == NoAction(reason=NoActionReason.POOL_OK)


def test_an_eni_needed_for_warm_or_minimum_targets_is_kept() -> None:
    warm = PoolConfig(max_enis=3, max_ips_per_eni=3, warm_ip_target=3)
    snap = pool(eni(0, ip(1), ip(), ip()), eni(1, ip(), ip(), ip()))
    assert deletable_eni(snap, warm) is None  # the others have 2 free < 3
    minimum = PoolConfig(max_enis=3, max_ips_per_eni=3, minimum_ip_target=4)
    assert deletable_eni(snap, minimum) is None  # the others hold 3 < 4
    relaxed = PoolConfig(max_enis=3, max_ips_per_eni=3, warm_ip_target=2)
    assert plan_free_eni(snap, relaxed) == FreeEni(eni_id="eni-1")


def test_an_excluded_enis_free_addresses_do_not_cover_a_warm_target() -> None:
    # eni-1's 3 free addresses are the only ones pods can use: the excluded eni-2's do not count.
    warm = PoolConfig(max_enis=4, max_ips_per_eni=3, warm_ip_target=3)
    snap = pool(
        eni(0, ip(1), ip(1), ip(1)), eni(1, ip(), ip(), ip()), eni(2, ip(), ip(), ip(), excluded=True)
    )
    assert plan_free_eni(snap, warm) == FreeEni(eni_id="eni-2")


def test_an_eni_needed_for_warm_prefix_target_is_kept() -> None:
    cfg = PoolConfig(
        max_enis=3, max_ips_per_eni=48, max_prefixes_per_eni=3, prefix_delegation=True, warm_prefix_target=1
    )
    snap = pool(eni(0, prefix(assigned=16)), eni(1, prefix()))
    assert deletable_eni(snap, cfg) is None
    spare = pool(eni(0, prefix(assigned=16), prefix()), eni(1))
    assert plan_free_eni(spare, cfg) == FreeEni(eni_id="eni-1")


def test_cards_above_zero_always_run_warm_ip_one_minimum_one() -> None:
    cfg = PoolConfig(max_enis=3, max_ips_per_eni=3, network_card=1, warm_ip_target=9, minimum_ip_target=0)
    assert (cfg.warm_ip_target, cfg.minimum_ip_target) == (1, 1)
    assert plan_increase(pool(eni(0)), cfg) == AssignToEni(eni_id="eni-0", count=1)
