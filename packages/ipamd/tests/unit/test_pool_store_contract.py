"""One contract, two implementations: the real `DataStore` and the pool tests' `FakePoolStore` must behave
alike on every `PoolStore` operation, so a pool or reconciler test on the fake says something about ipamd.

Each test runs against both, through a small driver that also assigns and releases pods (the port has no
such calls; each implementation has its own).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.datastore.model import NoAddressAvailable, UnknownEni
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.pool.snapshot import EniSnapshot
from vpccni.ipamd.pool.testing_store import FakePoolStore
from vpccni.ipamd.ports import EniRecord, PoolStore

COOLDOWN_S = 30.0


@dataclass(kw_only=True)
class Subject:
    store: PoolStore
    assign: Callable[[], IPv4Address | None]  # a new pod's address, None when there is none
    release: Callable[[IPv4Address], None]  # the pod holding the address is deleted
    exclude: Callable[[str], None]
    advance: Callable[[float], None]  # let time pass

    def eni(self, eni_id: str) -> EniSnapshot:
        return next(e for e in self.store.snapshot().enis if e.eni_id == eni_id)


def real(prefix_mode: bool) -> Subject:
    clock = FakeClock()
    ds = DataStore(
        checkpointer=MemoryCheckpointer(), clock=clock, cooldown_s=COOLDOWN_S, prefix_delegation=prefix_mode
    )
    names = (f"c{n}" for n in itertools.count())

    def assign() -> IPv4Address | None:
        try:
            return ds.assign(
                IPAMKey(network_name="aws-cni", container_id=next(names), ifname="eth0"), PodMetadata()
            ).ip
        except NoAddressAvailable:
            return None

    def release(ip: IPv4Address) -> None:
        ds.release(next(a.key for a in ds.assigned() if a.ip == ip))

    return Subject(store=ds, assign=assign, release=release, exclude=ds.set_excluded, advance=clock.advance)


def fake(prefix_mode: bool) -> Subject:
    clock = FakeClock()
    store = FakePoolStore(clock=clock, ip_cooldown_s=COOLDOWN_S)
    return Subject(
        store=store,
        assign=lambda: store.assign_pod(prefix_mode=prefix_mode),
        release=store.release_pod,
        exclude=store.set_excluded,
        advance=clock.advance,
    )


@pytest.fixture(params=[real, fake], ids=["DataStore", "FakePoolStore"])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., Subject]]:
    def build(*, prefix_mode: bool = False) -> Subject:
        subject: Subject = request.param(prefix_mode)
        subject.store.add_eni(eni("eni-1"))
        return subject

    yield build


def eni(eni_id: str, device: int = 1, subnet: str = "subnet-a") -> EniRecord:
    return EniRecord(
        eni_id=eni_id, device_number=device, primary_ip=IPv4Address(f"10.0.9.{device}"), subnet_id=subnet
    )


def ips(*last: int) -> list[IPv4Network]:
    return [IPv4Network(f"10.0.0.{n}/32") for n in last]


def test_add_eni_is_idempotent_and_keeps_the_cidrs(make: Callable[..., Subject]) -> None:
    s = make()
    s.store.add_cidrs("eni-1", ips(1, 2), is_prefix=False)
    s.store.add_eni(eni("eni-1", subnet="subnet-b"))
    assert [e.eni_id for e in s.store.snapshot().enis] == ["eni-1"]
    assert s.eni("eni-1").subnet_id == "subnet-b" and s.eni("eni-1").total_ips == 2


def test_add_cidrs_ignores_duplicates_and_checks_kind_and_eni(make: Callable[..., Subject]) -> None:
    s = make()
    s.store.add_cidrs("eni-1", ips(1), is_prefix=False)
    s.store.add_cidrs("eni-1", ips(1, 2), is_prefix=False)
    assert sorted(c.cidr for c in s.eni("eni-1").cidrs) == ips(1, 2)
    with pytest.raises(ValueError):
        s.store.add_cidrs("eni-1", ips(3), is_prefix=True)
    with pytest.raises(ValueError):
        s.store.add_cidrs("eni-1", [IPv4Network("10.0.1.0/28")], is_prefix=False)
    with pytest.raises(UnknownEni):
        s.store.add_cidrs("eni-x", ips(4), is_prefix=False)


def test_snapshot_counts_pods_and_cooldown(make: Callable[..., Subject]) -> None:
    s = make()
    s.store.add_cidrs("eni-1", ips(1, 2, 3), is_prefix=False)
    first, second = s.assign(), s.assign()
    assert first is not None and second is not None
    s.release(first)
    snap = s.eni("eni-1")
    assert (snap.total_ips, snap.assigned_ips, snap.in_cooldown) == (3, 1, 1)
    s.advance(COOLDOWN_S)
    assert s.eni("eni-1").in_cooldown == 0


def test_a_released_address_waits_out_the_cooldown(make: Callable[..., Subject]) -> None:
    s = make()
    s.store.add_cidrs("eni-1", ips(1), is_prefix=False)
    ip = s.assign()
    assert ip is not None and s.assign() is None
    s.release(ip)
    assert s.assign() is None
    s.advance(COOLDOWN_S)
    assert s.assign() == ip


def test_an_excluded_eni_serves_no_new_pods_but_keeps_its_own(make: Callable[..., Subject]) -> None:
    s = make()
    s.store.add_cidrs("eni-1", ips(1, 2), is_prefix=False)
    held = s.assign()
    s.exclude("eni-1")
    assert s.assign() is None
    assert s.eni("eni-1").excluded and s.eni("eni-1").assigned_ips == 1 and held is not None
    assert s.store.snapshot().total_ips == 0  # excluded ENIs are out of the totals, as upstream


def test_remove_cidrs_takes_only_cidrs_without_pods(make: Callable[..., Subject]) -> None:
    s = make()
    s.store.add_cidrs("eni-1", ips(1, 2, 3), is_prefix=False)
    held = s.assign()
    assert held is not None
    removed = s.store.remove_cidrs("eni-1", ips(1, 2, 3, 9))
    assert sorted(removed) == sorted(set(ips(1, 2, 3)) - {IPv4Network(held)})
    assert [c.cidr for c in s.eni("eni-1").cidrs] == [IPv4Network(held)]
    assert s.store.remove_cidrs("eni-x", ips(1)) == ()


def test_force_remove_cidrs_says_how_many_pods_lost_their_address(make: Callable[..., Subject]) -> None:
    s = make()
    s.store.add_cidrs("eni-1", ips(1, 2, 3), is_prefix=False)
    assert s.assign() is not None and s.assign() is not None
    assert s.store.force_remove_cidrs("eni-1", ips(1, 2, 3)) == 2
    assert s.eni("eni-1").cidrs == () and s.assign() is None
    assert s.store.force_remove_cidrs("eni-x", ips(1)) == 0


def test_remove_eni_only_without_pods_unless_forced(make: Callable[..., Subject]) -> None:
    s = make()
    s.store.add_eni(eni("eni-2", 2))
    s.store.add_cidrs("eni-1", ips(1), is_prefix=False)
    assert s.assign() is not None
    assert s.store.remove_eni("eni-2") is True
    assert s.store.remove_eni("eni-1") is False
    assert s.store.remove_eni("eni-1", force=True) is True
    assert s.store.snapshot().enis == () and s.store.remove_eni("eni-x") is False


def test_an_enis_age_comes_from_the_clock(make: Callable[..., Subject]) -> None:
    s = make()
    s.advance(45.0)
    s.store.add_eni(eni("eni-2", 2))
    s.advance(15.0)
    assert (s.eni("eni-1").age_s, s.eni("eni-2").age_s) == (60.0, 15.0)


def test_prefix_mode_serves_all_16_addresses_of_a_prefix_and_no_secondary_ip(
    make: Callable[..., Subject],
) -> None:
    s = make(prefix_mode=True)
    s.store.add_cidrs("eni-1", ips(1), is_prefix=False)
    s.store.add_cidrs("eni-1", [IPv4Network("10.0.1.16/28")], is_prefix=True)
    got = {s.assign() for _ in range(16)}
    assert got == set(IPv4Network("10.0.1.16/28")) and s.assign() is None
    snap = s.eni("eni-1")
    assert (snap.prefixes, snap.free_prefixes, snap.assigned_ips) == (1, 0, 16)
