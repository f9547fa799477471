"""The datastore: ENI → CIDR (/32 secondary IP or /28 prefix) → address, behind one lock.

Data structure (assign and release are O(1), amortised; nothing scans all addresses):
- `_by_key`: pod key → address record (idempotent ADD, DEL lookup).
- per CIDR: `tracked` (address → record, only addresses ever handed out), `ready` (insertion-ordered set
  of tracked addresses that are free and out of cooldown) and `next_offset` (the lowest never-used offset;
  addresses at or above it are free and untracked). A CIDR can serve when `ready` is non-empty or
  `next_offset < size`.
- `_serving[is_prefix]`: insertion-ordered set of CIDRs on usable (not excluded) ENIs that can serve. Assign
  takes the first; a CIDR leaves the set when it runs dry and rejoins when an address frees up.
- `_cooldown`: FIFO of (expiry, record, release serial). The cooldown period is one constant, so the FIFO is
  in expiry order; each operation first moves expired records back to `ready` (each record once per
  release). A record removed or re-assigned meanwhile has a different serial or CIDR, and its FIFO entry
  is skipped.
- per CIDR and per ENI: `assigned` and `cooling` counters, kept in step with the above.

The lock is never held across EC2 or netlink calls, nor across the checkpoint write. A change is made under
it and numbered; the caller then waits, outside it, for a write that covers its number before it returns (so
a change is on disk before it is acknowledged). One writer at a time takes the list of allocations under the
lock and writes it, so the file follows the order of changes, and one write serves every change made before
it began (group commit: 30 concurrent ADDs need a few writes, not 30). A failed write rolls back the change of
the caller that wrote it (before any other write can see it) and raises; the others retry with their own.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any, Protocol

from vpccni.awsutils.clock import SystemClock
from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry
from vpccni.ipamd.datastore.model import (
    AssignedAddress,
    CheckpointWriteFailed,
    CidrInUse,
    NoAddressAvailable,
    PoolCounts,
    UnknownEni,
    UnknownPod,
)
from vpccni.ipamd.datastore.records import (
    PREFIX_LEN,
    SECONDARY_LEN,
    AddressRecord,
    CidrRecord,
    EniState,
)
from vpccni.ipamd.datastore.views import eni_infos_json
from vpccni.ipamd.datastore.writer import BackgroundCommits
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.pool.snapshot import CidrSnapshot, EniSnapshot, PoolSnapshot
from vpccni.ipamd.ports import EniRecord

if TYPE_CHECKING:
    from vpccni.ipamd.checkpoint.file import Checkpointer

_log = logging.getLogger(__name__)


class Clock(Protocol):
    """What the datastore reads time from (awsutils' SystemClock and FakeClock satisfy it)."""

    def monotonic(self) -> float: ...

    def now(self) -> dt.datetime: ...


def _cidr_snapshot(cidr: CidrRecord) -> CidrSnapshot:
    cidr.snap = CidrSnapshot(
        cidr=cidr.network, is_prefix=cidr.is_prefix, assigned=cidr.assigned, in_cooldown=cidr.cooling
    )
    return cidr.snap


def _epoch_ns(clock: Clock) -> int:
    return int(clock.now().timestamp() * 1_000_000_000)


@dataclass(frozen=True, kw_only=True)
class EniCounts:
    eni_id: str
    total: int
    assigned: int
    in_cooldown: int


class DataStore:
    """One network card's addresses. Thread-safe; every public method takes the one lock for its duration."""

    def __init__(
        self,
        *,
        checkpointer: Checkpointer,
        prefix_delegation: bool = False,
        cooldown_s: float = 30.0,
        clock: Clock | None = None,
        network_card: int = 0,
    ) -> None:
        self._checkpointer = checkpointer
        self._prefix_mode = prefix_delegation
        self._cooldown_s = cooldown_s
        self._clock: Clock = clock or SystemClock()
        self._network_card = network_card
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._enis: dict[str, EniState] = {}
        self._cidrs: dict[IPv4Network, CidrRecord] = {}
        self._by_key: dict[IPAMKey, AddressRecord] = {}
        self._serving: dict[bool, dict[IPv4Network, CidrRecord]] = {True: {}, False: {}}
        self._cooldown: deque[tuple[float, AddressRecord, int]] = deque()
        # Group commit: changes are numbered under `_lock`; `_durable` (under `_write_lock`) is the number of
        # the last change in the file.
        self._version = 0
        self._durable = 0
        self._write_lock = threading.Lock()
        self._writer = BackgroundCommits()

    @property
    def prefix_delegation(self) -> bool:
        return self._prefix_mode

    @property
    def network_card(self) -> int:
        return self._network_card

    # --- ENIs and CIDRs (PoolStore port) ------------------------------------------------------------------

    def add_eni(self, eni: EniRecord) -> None:
        """Idempotent: re-adding a known ENI updates its record and keeps its CIDRs."""
        with self._lock:
            known = self._enis.get(eni.eni_id)
            if known is not None:
                known.record = eni
                return
            self._enis[eni.eni_id] = EniState(eni, self._clock.monotonic())

    def add_cidrs(self, eni_id: str, cidrs: Sequence[IPv4Network], *, is_prefix: bool) -> None:
        with self._lock:
            eni = self._eni(eni_id)
            for network in cidrs:
                want = PREFIX_LEN if is_prefix else SECONDARY_LEN
                if network.prefixlen != want:
                    raise ValueError(
                        f"{network} is not a /{want} ({'prefix' if is_prefix else 'secondary IP'})"
                    )
                if network in self._cidrs:
                    continue
                cidr = CidrRecord(network, eni)
                eni.cidrs[network] = cidr
                eni.cidr_snaps = None
                self._cidrs[network] = cidr
                self._offer(cidr)
            self._changed.notify_all()

    def add_cidr(self, eni_id: str, network: IPv4Network) -> None:
        self.add_cidrs(eni_id, [network], is_prefix=network.prefixlen != SECONDARY_LEN)

    def remove_cidr(
        self, eni_id: str, network: IPv4Network, *, force: bool = False
    ) -> tuple[AssignedAddress, ...]:
        """Remove one CIDR; returns the pods evicted (with `force`; else an in-use CIDR raises CidrInUse)."""
        with self._lock:
            evicted = self._remove_cidr(self._eni(eni_id), network, force=force)
        return self._evicted(evicted)

    def remove_cidrs(self, eni_id: str, cidrs: Sequence[IPv4Network]) -> tuple[IPv4Network, ...]:
        removed: list[IPv4Network] = []
        with self._lock:
            eni = self._eni(eni_id)
            for network in cidrs:
                try:
                    self._remove_cidr(eni, network, force=False)
                except CidrInUse:
                    continue
                removed.append(network)
        return tuple(removed)

    def force_remove_cidrs(self, eni_id: str, cidrs: Sequence[IPv4Network]) -> int:
        with self._lock:
            eni = self._eni(eni_id)
            evicted = [view for network in cidrs for view in self._remove_cidr(eni, network, force=True)]
        return len(self._evicted(tuple(evicted)))

    def evict_eni(self, eni_id: str) -> tuple[AssignedAddress, ...]:
        """Force-remove an ENI that is no longer attached; returns the pods that lost their address."""
        with self._lock:
            evicted = self._evict_eni(eni_id)
        return self._evicted(evicted)

    def remove_eni(self, eni_id: str, *, force: bool = False) -> bool:
        with self._lock:
            eni = self._enis.get(eni_id)
            if eni is None:
                return False
            if eni.assigned and not force:
                return False
            evicted = self._evict_eni(eni_id)
        self._evicted(evicted)
        return True

    def _remove_cidr(
        self, eni: EniState, network: IPv4Network, *, force: bool
    ) -> tuple[AssignedAddress, ...]:
        cidr = eni.cidrs.get(network)
        if cidr is None:
            return ()
        if cidr.assigned and not force:
            raise CidrInUse(network, cidr.assigned)
        return self._drop_cidr(cidr)

    def _evict_eni(self, eni_id: str) -> tuple[AssignedAddress, ...]:
        eni = self._enis.get(eni_id)
        if eni is None:
            return ()
        evicted: list[AssignedAddress] = []
        for cidr in list(eni.cidrs.values()):
            evicted.extend(self._drop_cidr(cidr))
        del self._enis[eni_id]
        return tuple(evicted)

    def _evicted(self, evicted: tuple[AssignedAddress, ...]) -> tuple[AssignedAddress, ...]:
        """Record evictions in the checkpoint (lock released); a failure is logged, the next write catches
        up."""
        if evicted:
            try:
                self._commit(self._current_version())
            except Exception:
                _log.exception(
                    "could not rewrite the checkpoint after evicting pods; retried on the next change"
                )
        return evicted

    def set_excluded(self, eni_id: str, excluded: bool = True) -> None:
        """Excluded ENIs (subnet tagged kubernetes.io/role/cni=0) keep their pods but get no new ones."""
        with self._lock:
            eni = self._eni(eni_id)
            if eni.excluded == excluded:
                return
            eni.excluded = excluded
            for cidr in eni.cidrs.values():
                if excluded:
                    self._serving[cidr.is_prefix].pop(cidr.network, None)
                else:
                    self._offer(cidr)
            self._changed.notify_all()

    # --- pods --------------------------------------------------------------------------------------------

    def assign(self, key: IPAMKey, metadata: PodMetadata) -> AssignedAddress:
        """The key's address; the same key always gets the same address (idempotent ADD).

        Returns once the assignment is in the checkpoint. Raises NoAddressAvailable (with counts) or
        CheckpointWriteFailed (nothing assigned).
        """
        view, commit = self._assign_change(key, metadata)
        commit()
        return view

    def assign_pending(self, key: IPAMKey, metadata: PodMetadata) -> tuple[AssignedAddress, Future[None]]:
        """`assign`, with the checkpoint write running in the background: the caller can set the pod up
        meanwhile and must wait for the future (it raises CheckpointWriteFailed, the assignment then rolled
        back) before it reports the address to anyone."""
        view, commit = self._assign_change(key, metadata)
        return view, self._writer.submit(commit)

    def _assign_change(
        self, key: IPAMKey, metadata: PodMetadata
    ) -> tuple[AssignedAddress, Callable[[], None]]:
        """Make the assignment in memory; returns it and the call that records it in the checkpoint."""
        with self._lock:
            self._expire()
            known = self._by_key.get(key)
            if known is not None:
                view, version = self._view(known), self._version
            else:
                addr = self._assign(key, metadata)
                view, version, serial = self._view(addr), self._version, addr.serial
        who = f"{view.ipv4} for {metadata.namespace}/{metadata.name}"

        if known is not None:

            def commit_known() -> None:  # the first ADD of this key may still be waiting for its write
                self._record(version, what=who)

            return view, commit_known

        def roll_back() -> None:
            if addr.key == key and addr.serial == serial:
                self._unassign(addr, cooldown=False)

        def commit() -> None:
            self._record(version, roll_back, what=who, outcome="; the assignment was rolled back")

        return view, commit

    def _assign(self, key: IPAMKey, metadata: PodMetadata) -> AddressRecord:
        """Take the next free address for `key` (lock held); raises NoAddressAvailable."""
        serving = self._serving[self._prefix_mode]
        if not serving:
            raise NoAddressAvailable(self._counts())
        cidr = next(iter(serving.values()))
        if cidr.ready:
            ip = next(iter(cidr.ready))
            del cidr.ready[ip]
            addr = cidr.tracked[ip]
        else:
            ip = IPv4Address(cidr.base + cidr.next_offset)
            cidr.next_offset += 1
            addr = AddressRecord(ip, cidr)
            cidr.tracked[ip] = addr
        if not cidr.can_serve():
            del serving[cidr.network]
        addr.key, addr.metadata, addr.assigned_ns = key, metadata, _epoch_ns(self._clock)
        addr.entry = CheckpointEntry(
            key=key, ipv4=ip, allocation_timestamp_ns=addr.assigned_ns, metadata=metadata
        )
        addr.serial += 1
        self._by_key[key] = addr
        self._count(cidr, assigned=1)
        self._version += 1
        return addr

    def release(self, key: IPAMKey) -> AssignedAddress:
        """Unassign the key's address (falls back to the legacy CRI key); it then cools down.

        Raises UnknownPod, or CheckpointWriteFailed (still assigned).
        """
        with self._lock:
            self._expire()
            addr = self._by_key.get(key) or self._by_key.get(key.legacy())
            if addr is None:
                raise UnknownPod(key)
            released = self._view(addr)
            self._unassign(addr, cooldown=True)
            self._version += 1
            version, serial = self._version, addr.serial

        def roll_back() -> None:
            if addr.key is None and addr.serial == serial and not addr.cidr.removed:
                self._reassign(addr, released)

        self._record(
            version, roll_back, what=f"the release of {released.ipv4}", outcome="; it stays assigned"
        )
        return released

    def lookup(self, key: IPAMKey) -> AssignedAddress | None:
        with self._lock:
            addr = self._by_key.get(key) or self._by_key.get(key.legacy())
            return None if addr is None else self._view(addr)

    def assigned(self) -> tuple[AssignedAddress, ...]:
        with self._lock:
            return tuple(self._view(a) for a in self._by_key.values())

    def wait_for_change(self, timeout_s: float) -> None:
        """Block until CIDRs are added or an address frees up (or cooldown ends), at most `timeout_s`."""
        with self._lock:
            wait = timeout_s
            if self._cooldown:
                wait = min(wait, max(self._cooldown[0][0] - self._clock.monotonic(), 0.0))
            if wait > 0:
                self._changed.wait(wait)

    # --- checkpoint ----------------------------------------------------------------------------------------

    def restore_assignments(
        self, entries: Iterable[CheckpointEntry]
    ) -> tuple[list[CheckpointEntry], list[CheckpointEntry]]:
        """Mark checkpointed pods assigned with their original timestamps; returns (restored, stale)."""
        restored: list[CheckpointEntry] = []
        stale: list[CheckpointEntry] = []
        with self._lock:
            for entry in entries:
                cidr = self._cidrs.get(IPv4Network(entry.ipv4)) or self._cidrs.get(
                    IPv4Network((entry.ipv4, PREFIX_LEN), strict=False)
                )
                if cidr is None or entry.key in self._by_key or self._taken(cidr, entry.ipv4):
                    stale.append(entry)
                    continue
                addr = self._track(cidr, entry.ipv4)
                addr.key, addr.metadata, addr.assigned_ns = (
                    entry.key,
                    entry.metadata,
                    entry.allocation_timestamp_ns,
                )
                addr.entry = entry
                addr.serial += 1
                self._by_key[entry.key] = addr
                self._count(cidr, assigned=1)
                if not cidr.can_serve():
                    self._serving[cidr.is_prefix].pop(cidr.network, None)
                restored.append(entry)
        return restored, stale

    def persist(self) -> None:
        """Rewrite the checkpoint from the current state, changed or not (raises OSError)."""
        self._commit(self._current_version(), force=True)

    # --- views -------------------------------------------------------------------------------------------

    def snapshot(self) -> PoolSnapshot:
        with self._lock:
            self._expire()
            now = self._clock.monotonic()
            return PoolSnapshot(
                enis=tuple(
                    EniSnapshot(
                        eni_id=eni.record.eni_id,
                        device_number=eni.record.device_number,
                        is_primary=eni.record.is_primary,
                        is_trunk=eni.record.is_trunk,
                        is_efa=eni.record.is_efa,
                        primary_ip=eni.record.primary_ip,
                        subnet_id=eni.record.subnet_id,
                        excluded=eni.excluded,
                        age_s=now - eni.added_mono,
                        cidrs=self._cidr_snapshots(eni),
                    )
                    for eni in self._enis.values()
                )
            )

    def freeable_cidrs(self, eni_id: str) -> tuple[IPv4Network, ...]:
        """CIDRs of the ENI with no pod and nothing in cooldown: safe to give back to EC2."""
        with self._lock:
            self._expire()
            eni = self._eni(eni_id)
            return tuple(c.network for c in eni.cidrs.values() if c.assigned == 0 and c.cooling == 0)

    def eni_counts(self, eni_id: str) -> EniCounts:
        with self._lock:
            self._expire()
            eni = self._eni(eni_id)
            total = sum(c.network.num_addresses for c in eni.cidrs.values())
            return EniCounts(eni_id=eni_id, total=total, assigned=eni.assigned, in_cooldown=eni.cooling)

    def eni_record(self, eni_id: str) -> EniRecord | None:
        with self._lock:
            eni = self._enis.get(eni_id)
            return None if eni is None else eni.record

    def counts(self) -> PoolCounts:
        with self._lock:
            self._expire()
            return self._counts()

    def eni_infos(self) -> dict[str, Any]:
        """Upstream's ENIInfos JSON (`/v1/enis` value for this card), unscrubbed."""
        with self._lock:
            self._expire()
            return eni_infos_json(self._enis.values(), self._network_card)

    # --- internals (lock held) ---------------------------------------------------------------------------

    def _eni(self, eni_id: str) -> EniState:
        eni = self._enis.get(eni_id)
        if eni is None:
            raise UnknownEni(eni_id)
        return eni

    def _offer(self, cidr: CidrRecord) -> None:
        if not cidr.eni.excluded and not cidr.removed and cidr.can_serve():
            self._serving[cidr.is_prefix].setdefault(cidr.network, cidr)

    @staticmethod
    def _cidr_snapshots(eni: EniState) -> tuple[CidrSnapshot, ...]:
        if eni.cidr_snaps is None:
            eni.cidr_snaps = tuple(c.snap or _cidr_snapshot(c) for c in eni.cidrs.values())
        return eni.cidr_snaps

    def _count(self, cidr: CidrRecord, *, assigned: int = 0, cooling: int = 0) -> None:
        cidr.snap = cidr.eni.cidr_snaps = None
        cidr.assigned += assigned
        cidr.eni.assigned += assigned
        cidr.cooling += cooling
        cidr.eni.cooling += cooling

    def _taken(self, cidr: CidrRecord, ip: IPv4Address) -> bool:
        addr = cidr.tracked.get(ip)
        return addr is not None and addr.key is not None

    def _track(self, cidr: CidrRecord, ip: IPv4Address) -> AddressRecord:
        """The record of `ip`, taking it out of the free structures (restore places specific addresses)."""
        addr = cidr.tracked.get(ip)
        if addr is None:
            offset = int(ip) - cidr.base
            # Untracked offsets below `next_offset` don't exist, so track the skipped ones as ready.
            for skipped in range(cidr.next_offset, offset):
                skipped_ip = IPv4Address(cidr.base + skipped)
                cidr.tracked[skipped_ip] = AddressRecord(skipped_ip, cidr)
                cidr.ready[skipped_ip] = None
            cidr.next_offset = max(cidr.next_offset, offset + 1)
            addr = AddressRecord(ip, cidr)
            cidr.tracked[ip] = addr
        cidr.ready.pop(ip, None)
        if addr.cooling:
            addr.cooling = False
            self._count(cidr, cooling=-1)
        return addr

    def _unassign(self, addr: AddressRecord, *, cooldown: bool) -> None:
        cidr = addr.cidr
        if addr.key is not None:
            self._by_key.pop(addr.key, None)
        addr.key, addr.metadata, addr.entry = None, PodMetadata(), None
        addr.unassigned_ns = _epoch_ns(self._clock)
        addr.serial += 1
        self._count(cidr, assigned=-1)
        if cooldown and self._cooldown_s > 0:
            addr.cooling = True
            self._count(cidr, cooling=1)
            self._cooldown.append((self._clock.monotonic() + self._cooldown_s, addr, addr.serial))
        else:
            cidr.ready[addr.ip] = None
            self._offer(cidr)
            self._changed.notify_all()

    def _reassign(self, addr: AddressRecord, view: AssignedAddress) -> None:
        self._track(addr.cidr, addr.ip)  # no longer free or cooling
        addr.key, addr.metadata, addr.assigned_ns = view.key, view.metadata, view.assigned_at_ns
        addr.entry = CheckpointEntry(
            key=view.key, ipv4=view.ipv4, allocation_timestamp_ns=view.assigned_at_ns, metadata=view.metadata
        )
        addr.serial += 1
        self._by_key[view.key] = addr
        self._count(addr.cidr, assigned=1)
        if not addr.cidr.can_serve():
            self._serving[addr.cidr.is_prefix].pop(addr.cidr.network, None)

    def _expire(self) -> None:
        now = self._clock.monotonic()
        freed = False
        while self._cooldown and self._cooldown[0][0] <= now:
            _, addr, serial = self._cooldown.popleft()
            if addr.serial != serial or not addr.cooling or addr.cidr.removed:
                continue
            addr.cooling = False
            self._count(addr.cidr, cooling=-1)
            addr.cidr.ready[addr.ip] = None
            self._offer(addr.cidr)
            freed = True
        if freed:
            self._changed.notify_all()

    def _drop_cidr(self, cidr: CidrRecord) -> tuple[AssignedAddress, ...]:
        evicted = tuple(self._view(a) for a in cidr.tracked.values() if a.key is not None)
        for addr in cidr.tracked.values():
            if addr.key is not None:
                self._by_key.pop(addr.key, None)
        cidr.eni.assigned -= cidr.assigned
        cidr.eni.cooling -= cidr.cooling
        if evicted:
            self._version += 1
        cidr.removed = True
        del cidr.eni.cidrs[cidr.network]
        cidr.eni.cidr_snaps = None
        del self._cidrs[cidr.network]
        self._serving[cidr.is_prefix].pop(cidr.network, None)
        for view in evicted:
            _log.warning(
                "evicted %s of %s/%s: %s was removed",
                view.ipv4,
                view.metadata.namespace,
                view.metadata.name,
                cidr.network,
            )
        return evicted

    def _counts(self) -> PoolCounts:
        total = assigned = cooling = excluded = other = 0
        for eni in self._enis.values():
            for c in eni.cidrs.values():
                size = c.network.num_addresses
                if eni.excluded:
                    excluded += size
                elif c.is_prefix != self._prefix_mode:
                    other += size
                else:
                    total += size
                    assigned += c.assigned
                    cooling += c.cooling
        next_free = None
        if self._cooldown:
            next_free = max(self._cooldown[0][0] - self._clock.monotonic(), 0.0)
        return PoolCounts(
            total_ips=total,
            assigned_ips=assigned,
            in_cooldown=cooling,
            excluded_ips=excluded,
            other_mode_ips=other,
            prefix_mode=self._prefix_mode,
            next_free_in_s=next_free,
        )

    def _view(self, addr: AddressRecord) -> AssignedAddress:
        assert addr.key is not None
        rec = addr.cidr.eni.record
        return AssignedAddress(
            key=addr.key,
            metadata=addr.metadata,
            ipv4=addr.ip,
            cidr=addr.cidr.network,
            eni_id=rec.eni_id,
            device_number=rec.device_number,
            network_card=self._network_card,
            assigned_at_ns=addr.assigned_ns,
        )

    def _current_version(self) -> int:
        with self._lock:
            return self._version

    def _record(
        self, version: int, roll_back: Callable[[], None] | None = None, *, what: str, outcome: str = ""
    ) -> None:
        """`_commit` for a pod's change: any failure becomes CheckpointWriteFailed saying what was not
        recorded and what became of the change (the change must not stand unrecorded)."""
        try:
            self._commit(version, roll_back)
        except Exception as exc:
            raise CheckpointWriteFailed(
                f"could not record {what} in the checkpoint ({exc}){outcome}: check free space and "
                "permissions of the backing store"
            ) from exc

    def _commit(
        self, version: int, roll_back: Callable[[], None] | None = None, *, force: bool = False
    ) -> None:
        """Return once change `version` is in the checkpoint, writing it unless a write since covered it.

        Called without `_lock`. On a failed write `roll_back` (of this caller's change) runs under both
        locks, so no later write can record a change that its caller reports as failed.
        """
        with self._write_lock:
            if self._durable >= version and not force:
                return
            with self._lock:
                entries = [a.entry for a in self._by_key.values() if a.entry is not None]
                upto = self._version
            try:
                self._checkpointer.write(entries)
            except BaseException:
                if roll_back is not None:
                    with self._lock:
                        roll_back()
                raise
            self._durable = upto
