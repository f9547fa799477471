"""The datastore: idempotent assign, cooldown, modes, exclusion, removal, counts, snapshot, concurrency."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.checkpoint.fileformat import decode
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.datastore.model import (
    CheckpointWriteFailed,
    CidrInUse,
    NoAddressAvailable,
    UnknownEni,
    UnknownPod,
)
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.ports import EniRecord, PoolStore


def key(n: int | str) -> IPAMKey:
    return IPAMKey(network_name="aws-cni", container_id=f"c{n}", ifname="eth0")


def meta(n: int | str) -> PodMetadata:
    return PodMetadata(namespace="default", name=f"pod-{n}")


def eni(eni_id: str = "eni-1", device: int = 0, **kw: object) -> EniRecord:
    return EniRecord(eni_id=eni_id, device_number=device, primary_ip=IPv4Address("10.0.0.10"), **kw)  # type: ignore[arg-type]


def secondary(*ips: str) -> list[IPv4Network]:
    return [IPv4Network(f"{ip}/32") for ip in ips]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ckpt() -> MemoryCheckpointer:
    return MemoryCheckpointer()


def make(clock: FakeClock, ckpt: MemoryCheckpointer, *, pd: bool = False, cooldown: float = 30) -> DataStore:
    return DataStore(checkpointer=ckpt, prefix_delegation=pd, cooldown_s=cooldown, clock=clock)


def test_assign_is_idempotent_and_checkpointed(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11", "10.0.0.12"), is_prefix=False)
    first = ds.assign(key(1), meta(1))
    again = ds.assign(key(1), meta(1))
    assert first == again
    other = ds.assign(key(2), meta(2))
    assert {first.ip, other.ip} == {IPv4Address("10.0.0.11"), IPv4Address("10.0.0.12")}
    entries = decode(ckpt.data or b"")
    assert {(e.key, e.ip) for e in entries} == {(key(1), first.ip), (key(2), other.ip)}
    assert first.assigned_at_ns == int(clock.now().timestamp() * 1e9)
    assert first.eni_id == "eni-1" and first.device_number == 0


def test_empty_pool_raises_with_counts(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)
    ds.assign(key(1), meta(1))
    with pytest.raises(NoAddressAvailable) as err:
        ds.assign(key(2), meta(2))
    assert err.value.counts.total_ips == 1 and err.value.counts.assigned_ips == 1
    assert "1 of 1 addresses" in str(err.value)


def test_released_ip_cools_down_before_reuse(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt, cooldown=30)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)
    a = ds.assign(key(1), meta(1))
    released = ds.release(key(1))
    assert released.ip == a.ip
    with pytest.raises(NoAddressAvailable) as err:
        ds.assign(key(2), meta(2))
    assert err.value.counts.in_cooldown == 1
    assert err.value.counts.next_free_in_s == pytest.approx(30)
    assert "cooldown" in str(err.value)
    snap = ds.snapshot()
    assert snap.enis[0].in_cooldown == 1 and snap.assigned_ips == 0
    assert ds.freeable_cidrs("eni-1") == ()
    clock.advance(29.9)
    with pytest.raises(NoAddressAvailable):
        ds.assign(key(2), meta(2))
    clock.advance(0.2)
    assert ds.assign(key(2), meta(2)).ip == a.ip
    assert ds.snapshot().enis[0].in_cooldown == 0


def test_release_unknown_pod_and_legacy_key(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)
    with pytest.raises(UnknownPod):
        ds.release(key(9))
    legacy = key(5).legacy()
    ds.assign(legacy, meta(5))
    # DEL arrives with the real triple; the datastore falls back to the migrated-from-CRI key.
    assert ds.release(key(5)).key == legacy


def test_prefix_mode_uses_only_prefixes_and_all_16_addresses(
    clock: FakeClock, ckpt: MemoryCheckpointer
) -> None:
    ds = make(clock, ckpt, pd=True)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)
    ds.add_cidrs("eni-1", [IPv4Network("10.0.1.16/28")], is_prefix=True)
    got = [ds.assign(key(i), meta(i)).ip for i in range(16)]
    assert sorted(got) == list(IPv4Network("10.0.1.16/28"))
    with pytest.raises(NoAddressAvailable) as err:
        ds.assign(key(99), meta(99))
    assert err.value.counts.other_mode_ips == 1
    snap = ds.snapshot()
    assert snap.total_prefixes == 1 and snap.free_prefixes == 0


def test_secondary_mode_ignores_prefixes(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt, pd=False)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", [IPv4Network("10.0.1.16/28")], is_prefix=True)
    with pytest.raises(NoAddressAvailable):
        ds.assign(key(1), meta(1))


def test_add_cidrs_checks_the_kind(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    with pytest.raises(ValueError, match="not a delegated prefix"):
        ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=True)
    with pytest.raises(UnknownEni):
        ds.add_cidrs("eni-x", secondary("10.0.0.11"), is_prefix=False)


def test_excluded_eni_serves_no_new_pods_but_keeps_old(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11", "10.0.0.12"), is_prefix=False)
    a = ds.assign(key(1), meta(1))
    ds.set_excluded("eni-1")
    with pytest.raises(NoAddressAvailable) as err:
        ds.assign(key(2), meta(2))
    assert err.value.counts.excluded_ips == 2
    assert ds.lookup(key(1)) == a
    assert ds.snapshot().total_ips == 0  # excluded ENIs don't count, as upstream
    ds.set_excluded("eni-1", False)
    assert ds.assign(key(2), meta(2)).ip != a.ip


def test_remove_cidr_forced_returns_evicted_pods(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11", "10.0.0.12"), is_prefix=False)
    a = ds.assign(key(1), meta(1))
    with pytest.raises(CidrInUse):
        ds.remove_cidr("eni-1", IPv4Network(f"{a.ip}/32"))
    other = next(c for c in secondary("10.0.0.11", "10.0.0.12") if c != IPv4Network(f"{a.ip}/32"))
    assert ds.remove_cidrs("eni-1", [IPv4Network(f"{a.ip}/32"), other]) == (other,)
    evicted = ds.remove_cidr("eni-1", IPv4Network(f"{a.ip}/32"), force=True)
    assert [e.key for e in evicted] == [key(1)]
    assert ds.lookup(key(1)) is None
    assert decode(ckpt.data or b"") == ()
    assert ds.snapshot().total_ips == 0


def test_removed_cidr_in_cooldown_is_forgotten(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)
    ds.assign(key(1), meta(1))
    ds.release(key(1))
    assert ds.remove_cidrs("eni-1", secondary("10.0.0.11")) == tuple(secondary("10.0.0.11"))
    clock.advance(60)
    with pytest.raises(NoAddressAvailable):
        ds.assign(key(2), meta(2))
    assert ds.counts().in_cooldown == 0


def test_remove_eni(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_eni(eni("eni-2", 1))
    ds.add_cidrs("eni-2", secondary("10.0.2.11"), is_prefix=False)
    ds.assign(key(1), meta(1))
    assert ds.remove_eni("eni-2") is False
    assert ds.force_remove_cidrs("eni-2", []) == 0
    assert ds.remove_eni("eni-2", force=True) is True
    assert ds.lookup(key(1)) is None
    assert ds.remove_eni("eni-2") is False
    assert [e.eni_id for e in ds.snapshot().enis] == ["eni-1"]


def test_checkpoint_failure_rolls_back_assign_and_release(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)
    ckpt.fail_writes = True
    with pytest.raises(CheckpointWriteFailed, match="rolled back"):
        ds.assign(key(1), meta(1))
    assert ds.lookup(key(1)) is None and ds.counts().assigned_ips == 0
    ckpt.fail_writes = False
    a = ds.assign(key(1), meta(1))  # the address went straight back to the pool (no cooldown)
    ckpt.fail_writes = True
    with pytest.raises(CheckpointWriteFailed, match="stays assigned"):
        ds.release(key(1))
    assert ds.lookup(key(1)) == a and ds.counts().in_cooldown == 0
    ckpt.fail_writes = False
    ds.release(key(1))
    clock.advance(31)
    assert ds.assign(key(2), meta(2)).ip == a.ip


def test_snapshot_counts_per_eni_and_cidr(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt, pd=True)
    ds.add_eni(eni("eni-1", 0, is_primary=True))
    clock.advance(100)
    ds.add_eni(eni("eni-2", 2))
    ds.add_cidrs("eni-1", [IPv4Network("10.0.1.0/28")], is_prefix=True)
    ds.add_cidrs("eni-2", [IPv4Network("10.0.2.0/28"), IPv4Network("10.0.2.16/28")], is_prefix=True)
    for i in range(18):
        ds.assign(key(i), meta(i))
    snap = ds.snapshot()
    assert snap.total_ips == 48 and snap.assigned_ips == 18 and snap.available_ips == 30
    by_id = {e.eni_id: e for e in snap.enis}
    assert by_id["eni-1"].is_primary and by_id["eni-1"].age_s == pytest.approx(100)
    assert by_id["eni-2"].age_s == 0
    assert snap.free_prefixes == 1
    counts = ds.eni_counts("eni-2")
    assert counts.total == 32 and counts.assigned == sum(c.assigned for c in by_id["eni-2"].cidrs)
    assert len(ds.freeable_cidrs("eni-2")) + len(ds.freeable_cidrs("eni-1")) == 1


def test_eni_infos_upstream_shape(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni("eni-2", 2, subnet_id="subnet-1"))
    ds.add_cidrs("eni-2", secondary("10.0.2.11"), is_prefix=False)
    ds.assign(key(1), meta(1))
    info = ds.eni_infos()
    assert info["TotalIPs"] == 1 and info["AssignedIPs"] == 1
    e = info["ENIs"]["eni-2"]
    assert e["RouteTableID"] == 3 and e["DeviceNumber"] == 2 and e["SubnetID"] == "subnet-1"
    assert e["AvailableIPv4Cidrs"]["10.0.2.11/32"]["Cidr"] == {"IP": "10.0.2.11", "Mask": "/////w=="}
    addr = e["AvailableIPv4Cidrs"]["10.0.2.11/32"]["IPAddresses"]["10.0.2.11"]
    assert addr["IPAMKey"] == {"networkName": "aws-cni", "containerID": "c1", "ifName": "eth0"}
    assert addr["AssignedTime"] == "2026-01-01T00:00:00Z"
    assert addr["UnassignedTime"] == "0001-01-01T00:00:00Z"


def test_wait_for_change_wakes_on_new_cidr(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    woke = threading.Event()

    def waiter() -> None:
        ds.wait_for_change(30)
        woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)
    assert woke.wait(10)
    t.join()


def test_concurrent_assign_and_release_keep_counts_consistent(ckpt: MemoryCheckpointer) -> None:
    clock = FakeClock()
    ds = DataStore(checkpointer=ckpt, prefix_delegation=True, cooldown_s=0, clock=clock)
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", [IPv4Network(f"10.0.{i}.0/28") for i in range(8)], is_prefix=True)  # 128 addresses
    errors: list[BaseException] = []
    held: dict[IPAMKey, IPv4Address] = {}
    held_lock = threading.Lock()

    def worker(w: int) -> None:
        try:
            for round_ in range(40):
                k = key(f"{w}-{round_}")
                got = ds.assign(k, meta(w)).ip
                with held_lock:
                    assert got not in held.values(), "one address handed to two pods"
                    held[k] = got
                if round_ % 2:
                    with held_lock:
                        del held[k]
                    ds.release(k)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    snap = ds.snapshot()
    assert snap.assigned_ips == len(held) == 6 * 20
    assert {a.ip for a in ds.assigned()} == set(held.values())
    assert {(e.key, e.ip) for e in decode(ckpt.data or b"")} == set(held.items())


def test_datastore_is_the_pools_store(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    store: PoolStore = make(clock, ckpt)
    members = [n for n in vars(PoolStore) if not n.startswith("_")]
    assert members and all(callable(getattr(store, n)) for n in members)


@pytest.mark.parametrize("seed", range(5))
def test_random_operations_keep_every_invariant(seed: int) -> None:
    """Random assign/release/clock/CIDR/exclusion sequences against a plain model of what must hold."""
    rng = random.Random(seed)
    clock = FakeClock()
    ckpt = MemoryCheckpointer()
    pd = seed % 2 == 1
    ds = DataStore(checkpointer=ckpt, prefix_delegation=pd, cooldown_s=5, clock=clock)
    ds.add_eni(eni("eni-1"))
    ds.add_eni(eni("eni-2", 1))
    pool = (
        [IPv4Network(f"10.1.{i}.0/28") for i in range(4)]
        if pd
        else secondary(*(f"10.1.0.{i}" for i in range(1, 13)))
    )
    released_at: dict[IPv4Address, float] = {}
    live: dict[IPAMKey, IPv4Address] = {}
    handed_out = reused = 0
    for step in range(600):
        op = rng.random()
        if op < 0.45:
            k = key(f"{seed}-{step}")
            try:
                got = ds.assign(k, meta(step)).ip
            except NoAddressAvailable:
                continue
            assert got not in live.values()
            if got in released_at:
                assert clock.monotonic() - released_at[got] >= 5, "reused during cooldown"
                reused += 1
            live[k] = got
            handed_out += 1
        elif op < 0.75 and live:
            k = rng.choice(sorted(live, key=lambda x: x.container_id))
            ip = live.pop(k)
            assert ds.release(k).ip == ip
            released_at[ip] = clock.monotonic()
        elif op < 0.85:
            clock.advance(rng.uniform(0, 3))
        elif op < 0.93:
            cidr = rng.choice(pool)
            holder = owner(ds, cidr)
            if holder is None:
                ds.add_cidrs(rng.choice(["eni-1", "eni-2"]), [cidr], is_prefix=pd)
            elif ds.remove_cidrs(holder, [cidr]):
                assert not any(ip in cidr for ip in live.values())  # an in-use CIDR is never removed
                for ip in list(released_at):
                    if ip in cidr:
                        del released_at[ip]  # a re-added CIDR is a fresh one from EC2
        else:
            ds.set_excluded("eni-2", rng.random() < 0.3)
        snap = ds.snapshot()
        assigned = ds.assigned()
        assert {a.key: a.ip for a in assigned} == live
        assert sum(e.assigned_ips for e in snap.enis) == len(live)
        for a in assigned:
            assert a.ip in a.cidr
    assert {(e.key, e.ip) for e in decode(ckpt.data or b"")} == set(live.items())
    assert handed_out > 50 and reused > 5  # the sequence really exercised assignment and reuse


def owner(ds: DataStore, cidr: IPv4Network) -> str | None:
    return next((e.eni_id for e in ds.snapshot().enis if any(c.cidr == cidr for c in e.cidrs)), None)


class GatedCheckpointer(MemoryCheckpointer):
    """Writes wait at a gate (to hold a write in flight); records the pod keys of every completed write."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False
        self.written: list[set[str]] = []

    def write(self, entries) -> None:  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.gate.wait(5)
        if self.fail_next:
            self.fail_next = False
            raise OSError(28, "No space left on device")
        super().write(entries)
        self.written.append({e.key.container_id for e in entries})


def _in_thread(fn):  # type: ignore[no-untyped-def]
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(_outcome(fn)))
    thread.start()
    return thread, out


def _until(condition) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _outcome(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except Exception as exc:
        return exc


def test_an_assignment_returns_only_once_a_write_holds_it_and_one_write_serves_many(clock: FakeClock) -> None:
    ck = GatedCheckpointer()
    ds = make(clock, ck)  # type: ignore[arg-type]
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", [IPv4Network(f"10.0.0.{i}/32") for i in range(11, 41)], is_prefix=False)
    ck.gate.clear()
    first, first_out = _in_thread(lambda: ds.assign(key(0), meta(0)))
    assert ck.entered.wait(5)  # the first write is in flight
    # The datastore is not locked during the write: reads and other assignments go on.
    assert ds.lookup(key(0)) is not None and ds.snapshot().assigned_ips == 1
    others = [_in_thread(lambda n=n: ds.assign(key(n), meta(n))) for n in range(1, 30)]
    _until(lambda: ds.counts().assigned_ips == 30)
    assert all(not out for _, out in others) and not first_out  # nobody is answered before a write holds it
    ck.gate.set()
    for thread, _ in [(first, first_out), *others]:
        thread.join(5)
    results = [first_out[0], *(out[0] for _, out in others)]
    assert all(not isinstance(r, Exception) for r in results)
    assert ck.written[-1] == {f"c{n}" for n in range(30)}
    assert len(ck.written) < 30  # the 29 that waited behind the first write shared the writes after it
    assert {e.key.container_id for e in decode(ck.data or b"")} == {f"c{n}" for n in range(30)}


def test_a_failed_write_rolls_back_only_its_writers_change_before_anyone_else_writes(
    clock: FakeClock,
) -> None:
    ck = GatedCheckpointer()
    ds = make(clock, ck)  # type: ignore[arg-type]
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11", "10.0.0.12"), is_prefix=False)
    ck.gate.clear()
    ck.fail_next = True
    failing, failing_out = _in_thread(lambda: ds.assign(key(1), meta(1)))
    assert ck.entered.wait(5)
    waiting, waiting_out = _in_thread(lambda: ds.assign(key(2), meta(2)))
    _until(lambda: ds.counts().assigned_ips == 2)
    ck.gate.set()
    failing.join(5)
    waiting.join(5)
    assert isinstance(failing_out[0], CheckpointWriteFailed) and "rolled back" in str(failing_out[0])
    assert not isinstance(waiting_out[0], Exception)
    assert ds.lookup(key(1)) is None and ds.lookup(key(2)) is not None
    assert ck.written == [{"c2"}]  # the second writer's file never held the rolled-back pod


def test_a_release_whose_write_failed_is_undone(clock: FakeClock) -> None:
    ck = GatedCheckpointer()
    ds = make(clock, ck, cooldown=0)  # type: ignore[arg-type]
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)
    held = ds.assign(key(1), meta(1))
    ck.fail_next = True
    with pytest.raises(CheckpointWriteFailed, match="stays assigned"):
        ds.release(key(1))
    assert ds.lookup(key(1)) == held
    with pytest.raises(NoAddressAvailable):  # not handed to anyone else meanwhile
        ds.assign(key(2), meta(2))
    assert ck.written[-1] == {"c1"}


def test_evictions_and_persist_reach_the_checkpoint(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make(clock, ckpt)
    ds.add_eni(eni())
    ds.add_eni(eni("eni-2", 1))
    ds.add_cidrs("eni-2", secondary("10.0.2.11", "10.0.2.12"), is_prefix=False)
    ds.assign(key(1), meta(1))
    ds.assign(key(2), meta(2))
    assert ds.force_remove_cidrs("eni-2", secondary("10.0.2.11")) == 1
    assert [e.key.container_id for e in decode(ckpt.data or b"")] == ["c2"]
    assert len(ds.evict_eni("eni-2")) == 1
    assert decode(ckpt.data or b"") == ()
    writes = ckpt.writes
    ds.persist()  # unchanged, but rewritten on request (restore normalises the file this way)
    assert ckpt.writes == writes + 1


def test_snapshots_stay_exact_while_their_views_are_reused(
    clock: FakeClock, ckpt: MemoryCheckpointer
) -> None:
    """Each ENI's CIDR views are cached until a counter changes: after any mix of operations a snapshot
    equals one built from scratch."""
    from vpccni.ipamd.pool.snapshot import CidrSnapshot

    def fresh() -> dict[str, tuple[CidrSnapshot, ...]]:
        return {
            eni.record.eni_id: tuple(
                CidrSnapshot(
                    cidr=c.network, is_prefix=c.is_prefix, assigned=c.assigned, in_cooldown=c.cooling
                )
                for c in eni.cidrs.values()
            )
            for eni in ds._index.enis.values()
        }

    ds = make(clock, ckpt, cooldown=5)
    rng = random.Random(7)
    ds.add_eni(eni())
    ds.add_eni(eni("eni-2", 2))
    ds.add_cidrs("eni-1", [IPv4Network(f"10.0.1.{i}/32") for i in range(1, 9)], is_prefix=False)
    live: list[int] = []
    for step in range(300):
        op = rng.random()
        if op < 0.45:
            try:
                ds.assign(key(step), meta(step))
                live.append(step)
            except NoAddressAvailable:
                pass
        elif op < 0.8 and live:
            ds.release(key(live.pop(rng.randrange(len(live)))))
        elif op < 0.88:
            clock.advance(rng.choice((1, 6)))
        elif op < 0.94:
            ds.add_cidrs("eni-2", [IPv4Network(f"10.0.2.{step % 250}/32")], is_prefix=False)
        else:
            network = rng.choice(list(ds._index.enis["eni-2"].cidrs) or [IPv4Network("10.0.2.0/32")])
            ds.force_remove_cidrs("eni-2", [network])
            live = [n for n in live if ds.lookup(key(n)) is not None]
        snap = ds.snapshot()
        assert {e.eni_id: e.cidrs for e in snap.enis} == fresh(), step


def test_a_pending_assignment_is_returned_before_its_write_and_written_after(clock: FakeClock) -> None:
    ck = GatedCheckpointer()
    ds = make(clock, ck)  # type: ignore[arg-type]
    ds.add_eni(eni())
    ds.add_cidrs("eni-1", secondary("10.0.0.11", "10.0.0.12"), is_prefix=False)
    ck.gate.clear()
    view, written = ds.assign_pending(key(1), meta(1))
    assert view.ip == IPv4Address("10.0.0.11") and ck.entered.wait(5) and not written.done()
    ck.gate.set()
    assert written.result(5) is None and ck.written == [{"c1"}]
    ck.fail_next = True
    _, failed = ds.assign_pending(key(2), meta(2))
    with pytest.raises(CheckpointWriteFailed, match="rolled back"):
        failed.result(5)
    assert ds.lookup(key(2)) is None and ds.counts().assigned_ips == 1


def test_background_commits_run_in_order_report_errors_and_end_when_idle() -> None:
    from vpccni.ipamd.datastore.writer import BackgroundCommits

    commits = BackgroundCommits(idle_s=0.05, name="test-writer")
    done: list[int] = []

    def boom() -> None:
        raise OSError(5, "I/O error")

    futures = [commits.submit(lambda n=n: done.append(n)) for n in range(20)]
    failed = commits.submit(boom)
    assert [f.result(5) for f in futures] == [None] * 20 and done == list(range(20))
    with pytest.raises(OSError, match="I/O error"):
        failed.result(5)
    _until(lambda: not any(t.name == "test-writer" for t in threading.enumerate()))
    assert commits.submit(lambda: done.append(99)).result(5) is None and done[-1] == 99  # starts again


# --- IPv6 mode ------------------------------------------------------------------------------------------

PREFIX_V6 = IPv6Network("2001:db8:0:100:1::/80")


def make_v6(clock: FakeClock, ckpt: MemoryCheckpointer, *, cooldown: float = 30) -> DataStore:
    ds = DataStore(checkpointer=ckpt, cooldown_s=cooldown, clock=clock, ipv6=True)
    ds.add_eni(eni(is_primary=True))
    return ds


def test_ipv6_mode_hands_out_128s_of_the_80_and_checkpoints_them_as_ipv6(
    clock: FakeClock, ckpt: MemoryCheckpointer
) -> None:
    ds = make_v6(clock, ckpt)
    ds.add_cidrs("eni-1", secondary("10.0.0.11"), is_prefix=False)  # an IPv4 address: kept, never served
    ds.add_cidrs("eni-1", [PREFIX_V6], is_prefix=True)
    first, second = ds.assign(key(1), meta(1)), ds.assign(key(2), meta(2))
    assert (first.ip, second.ip) == (PREFIX_V6[0], PREFIX_V6[1])
    assert first.cidr == PREFIX_V6 and first.device_number == 0
    assert ds.assign(key(1), meta(1)) == first  # idempotent
    assert b'"ipv6":"2001:db8:0:100:1::"' in (ckpt.data or b"")
    assert {e.ip for e in decode(ckpt.data or b"")} == {first.ip, second.ip}
    # A released address cools down like an IPv4 one; the next pod gets a fresh one.
    ds.release(key(1))
    assert ds.assign(key(3), meta(3)).ip == PREFIX_V6[2]
    counts = ds.counts()
    assert counts.total_ips == 2**48 and counts.assigned_ips == 2 and counts.other_mode_ips == 1


def test_ipv6_mode_enis_json_lists_the_prefix_as_upstream(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make_v6(clock, ckpt)
    ds.add_cidrs("eni-1", [PREFIX_V6], is_prefix=True)
    ds.assign(key(1), meta(1))
    info = ds.eni_infos()
    assert info["TotalIPs"] == 2**48 and info["AssignedIPs"] == 1  # as upstream's v1 datastore counts
    eni_json = info["ENIs"]["eni-1"]
    assert eni_json["AvailableIPv4Cidrs"] == {}
    cidr = eni_json["IPv6Cidrs"][str(PREFIX_V6)]
    assert cidr["AddressFamily"] == "6" and cidr["IsPrefix"] is True
    assert cidr["Cidr"] == {"IP": "2001:db8:0:100:1::", "Mask": "/////////////wAAAAAAAA=="}  # ten 0xff bytes
    assert set(cidr["IPAddresses"]) == {"2001:db8:0:100:1::"}


def test_ipv6_mode_restores_ipv6_entries_and_drops_others_as_stale(
    clock: FakeClock, ckpt: MemoryCheckpointer
) -> None:
    old = make_v6(clock, ckpt)
    old.add_cidrs("eni-1", [PREFIX_V6], is_prefix=True)
    kept = old.assign(key(1), meta(1))
    entries = decode(ckpt.data or b"")
    stray = replace(entries[0], key=key(9), ip=IPv4Address("10.0.0.11"))
    fresh = make_v6(clock, MemoryCheckpointer())
    fresh.add_cidrs("eni-1", [PREFIX_V6], is_prefix=True)
    restored, stale = fresh.restore_assignments([*entries, stray])
    assert [e.ip for e in restored] == [kept.ip] and stale == [stray]
    assert fresh.assign(key(2), meta(2)).ip == PREFIX_V6[1]


def test_ipv6_prefix_must_be_added_as_a_prefix(clock: FakeClock, ckpt: MemoryCheckpointer) -> None:
    ds = make_v6(clock, ckpt)
    with pytest.raises(ValueError, match="is not a secondary IP"):
        ds.add_cidrs("eni-1", [PREFIX_V6], is_prefix=False)
    with pytest.raises(ValueError, match="neither"):
        ds.add_cidrs("eni-1", [IPv6Network("2001:db8::/64")], is_prefix=True)
