"""Growth planned for waiting ADDs and in-flight work, on top of upstream's planner (pool/growth.py)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.decisions import AllocateEni, AssignToEni, NoActionReason
from vpccni.ipamd.pool.growth import InFlight, plan_growth, pods_first, projected
from vpccni.ipamd.pool.planner import plan_increase
from vpccni.ipamd.pool.snapshot import CidrSnapshot, EniSnapshot, PoolSnapshot

M5_4XL = {"max_enis": 8, "max_ips_per_eni": 29, "max_pods": 234}


def _eni(eni_id: str, device: int, *, ips: int = 0, used: int = 0, prefixes: int = 0) -> EniSnapshot:
    cidrs = [
        CidrSnapshot(cidr=IPv4Network(f"10.0.{device}.{n}/32"), is_prefix=False, assigned=int(n < used))
        for n in range(ips)
    ] + [
        CidrSnapshot(
            cidr=IPv4Network(f"10.1.{device}.{16 * n}/28"), is_prefix=True, assigned=16 * int(n < used)
        )
        for n in range(prefixes)
    ]
    return EniSnapshot(eni_id=eni_id, device_number=device, is_primary=device == 0, cidrs=tuple(cidrs))


def _full_primary() -> PoolSnapshot:
    return PoolSnapshot(enis=(_eni("eni-0", 0, ips=29, used=29),))


def test_without_demand_or_work_in_flight_it_is_upstream_s_next_step() -> None:
    cfg = PoolConfig(**M5_4XL)
    snap = _full_primary()
    growth, _ = plan_growth(snap, cfg)
    assert growth == (plan_increase(snap, cfg),) == (AllocateEni(size=29),)


def test_waiting_adds_start_every_eni_they_and_the_warm_target_need_at_once() -> None:
    growth, stop = plan_growth(_full_primary(), PoolConfig(**M5_4XL), waiting=71)
    # 71 pods + WARM_ENI_TARGET's 29 free = 100 addresses = 4 ENIs, each sized as upstream sizes one
    assert (
        growth == (AllocateEni(size=29),) * 4 and stop is not None and stop.reason is NoActionReason.POOL_OK
    )


def test_work_in_flight_counts_so_nothing_is_started_twice() -> None:
    inflight = [InFlight(key=1, eni_id=None, cidrs=29, prefixes=False)] * 2
    growth, _ = plan_growth(_full_primary(), PoolConfig(**M5_4XL), inflight=inflight, waiting=71)
    assert growth == (AllocateEni(size=29),) * 2
    growth, _ = plan_growth(_full_primary(), PoolConfig(**M5_4XL), inflight=inflight * 2, waiting=71)
    assert growth == ()


def test_the_number_of_new_enis_is_bounded() -> None:
    growth, stop = plan_growth(_full_primary(), PoolConfig(**M5_4XL), waiting=200, new_enis=2)
    assert growth == (AllocateEni(size=29),) * 2 and stop is None  # more would be needed: later


def test_prefix_assignments_to_one_eni_go_out_as_one_call() -> None:
    cfg = PoolConfig(**M5_4XL, prefix_delegation=True, max_prefixes_per_eni=29, warm_prefix_target=1)
    snap = PoolSnapshot(enis=(_eni("eni-0", 0, prefixes=1, used=1),))
    growth, _ = plan_growth(snap, cfg, waiting=70)
    # 70 pods need 5 more /28s (the first is full), and WARM_PREFIX_TARGET one free: 6, in one call
    assert growth == (AssignToEni(eni_id="eni-0", count=6, prefixes=True),)


def test_a_few_more_addresses_for_an_eni_being_assigned_to_wait_for_that_call() -> None:
    cfg = PoolConfig(**M5_4XL, warm_ip_target=10, minimum_ip_target=30)
    snap = PoolSnapshot(enis=(_eni("eni-0", 0, ips=20, used=20),))
    busy = [InFlight(key=1, eni_id="eni-0", cidrs=5, prefixes=False)]
    growth, _ = plan_growth(snap, cfg, inflight=busy, waiting=3)
    # eni-0's last 4 IPs go out in one call once the first lands; the rest of the warm target needs an ENI
    assert growth == (AllocateEni(size=4),)
    growth, _ = plan_growth(snap, cfg, inflight=busy, waiting=30)
    assert growth == (AllocateEni(size=29), AllocateEni(size=2))
    big = PoolSnapshot(enis=(_eni("eni-0", 0, ips=5, used=5),))
    growth, _ = plan_growth(big, cfg, inflight=busy, waiting=40)
    assert growth[0] == AssignToEni(eni_id="eni-0", count=19)  # a /28's worth or more may go at once


def test_more_for_an_eni_still_being_allocated_waits_until_it_exists() -> None:
    cfg = PoolConfig(**M5_4XL, warm_ip_target=10, minimum_ip_target=30)
    inflight = [InFlight(key=1, eni_id=None, cidrs=5, prefixes=False)]
    growth, _ = plan_growth(_full_primary(), cfg, inflight=inflight, waiting=2)
    assert growth == ()  # the new ENI has room: fill it once attached, not with another ENI


def test_an_add_waiting_while_every_free_address_cools_down_grows_the_pool() -> None:
    # Found by nox -s chaos: pods churned faster than IP_COOLDOWN_PERIOD left every free address cooling;
    # the pool "met its warm targets" with them and an ADD waited 27 s for a cooldown to end.
    def cooling(eni_id: str, device: int) -> EniSnapshot:
        cidrs = tuple(
            CidrSnapshot(
                cidr=IPv4Network(f"10.0.{device}.{n}/32"), is_prefix=False, assigned=0, in_cooldown=1
            )
            for n in range(29)
        )
        return EniSnapshot(eni_id=eni_id, device_number=device, is_primary=device == 0, cidrs=cidrs)

    snap = PoolSnapshot(enis=(cooling("eni-0", 0), cooling("eni-1", 1)))
    assert plan_growth(snap, PoolConfig(**M5_4XL))[0] == ()  # nobody waits: cooling addresses count as free
    growth, _ = plan_growth(snap, pods_first(PoolConfig(**M5_4XL)), waiting=1)  # as the manager asks first
    assert len(growth) == 1 and isinstance(growth[0], AllocateEni)


def test_projection_counts_waiting_adds_as_assigned_and_in_flight_addresses_as_free() -> None:
    inflight = [InFlight(key=1, eni_id=None, cidrs=29, prefixes=False)]
    pool = projected(_full_primary(), inflight=inflight, waiting=10)
    assert (pool.total_ips, pool.assigned_ips, pool.available_ips, len(pool.enis)) == (58, 39, 19, 2)


@pytest.mark.parametrize("waiting,expected", [(0, ()), (4, (AllocateEni(size=29),))])
def test_pods_first_grows_only_for_waiting_pods(waiting: int, expected: tuple[AllocateEni, ...]) -> None:
    snap = PoolSnapshot(enis=(_eni("eni-0", 0, ips=29, used=27),))
    cfg = pods_first(PoolConfig(**M5_4XL, warm_ip_target=10, minimum_ip_target=30))
    assert plan_growth(snap, cfg, waiting=waiting)[0] == expected
