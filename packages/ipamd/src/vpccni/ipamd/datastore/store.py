"""The datastore: one network card's addresses behind one lock.

It composes small parts, each in its own module: the allocation index (`index`: ENI → CIDR → address and
pod key → address), the IP cooldown (`cooldown`), durability (`durability`: a change is in the checkpoint
before it is acknowledged, with group commit) and the read-only views (`views`). This module only takes the
lock, calls them in the right order and turns their results into the port's values and errors.

The lock is never held across EC2 or netlink calls, nor across the checkpoint write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.ipamd.checkpoint.file import Checkpointer
from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry
from vpccni.ipamd.datastore import views
from vpccni.ipamd.datastore.cooldown import AddressCooldown
from vpccni.ipamd.datastore.durability import GroupCommit
from vpccni.ipamd.datastore.index import AllocationIndex
from vpccni.ipamd.datastore.model import (
    AssignedAddress,
    CidrInUse,
    NoAddressAvailable,
    PoolCounts,
    UnknownPod,
)
from vpccni.ipamd.datastore.records import AddressRecord, CidrKind, EniState, PodCidr
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.ports import EniRecord

_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EniCounts:
    eni_id: str
    total: int
    assigned: int
    in_cooldown: int


class DataStore:
    """Thread-safe; every public method takes the one lock for its duration (the checkpoint write apart)."""

    def __init__(
        self,
        *,
        checkpointer: Checkpointer,
        prefix_delegation: bool = False,
        cooldown_s: float = 30.0,
        clock: Clock | None = None,
        network_card: int = 0,
        ipv6: bool = False,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._network_card = network_card
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._index = AllocationIndex(serves=CidrKind.mode(prefix_delegation=prefix_delegation, ipv6=ipv6))
        self._cooldown = AddressCooldown(cooldown_s)
        self._durability = GroupCommit(
            checkpointer=checkpointer,
            lock=self._lock,
            entries=lambda: [a.entry for a in self._index.by_key.values() if a.entry is not None],
        )

    @property
    def prefix_delegation(self) -> bool:
        return self._index.serves.is_prefix

    @property
    def network_card(self) -> int:
        return self._network_card

    # --- ENIs and CIDRs (PoolStore port) ------------------------------------------------------------------

    def add_eni(self, eni: EniRecord) -> None:
        """Idempotent: re-adding a known ENI updates its record and keeps its CIDRs."""
        with self._lock:
            self._index.add_eni(eni, now=self._clock.monotonic())

    def add_cidrs(self, eni_id: str, cidrs: Sequence[PodCidr], *, is_prefix: bool) -> None:
        """Raises UnknownEni, or ValueError for a CIDR that is not of the kind `is_prefix` says."""
        with self._lock:
            eni = self._index.eni(eni_id)
            for network in cidrs:
                kind = CidrKind.of(network)
                if kind.is_prefix != is_prefix:
                    want = "a delegated prefix (/28 or /80)" if is_prefix else "a secondary IP (/32)"
                    raise ValueError(f"{network} is not {want}")
                self._index.add_cidr(eni, network, kind)
            self._changed.notify_all()

    def add_cidr(self, eni_id: str, network: PodCidr) -> None:
        self.add_cidrs(eni_id, [network], is_prefix=CidrKind.of(network).is_prefix)

    def remove_cidr(
        self, eni_id: str, network: PodCidr, *, force: bool = False
    ) -> tuple[AssignedAddress, ...]:
        """Remove one CIDR; returns the pods evicted (with `force`; else an in-use CIDR raises CidrInUse)."""
        with self._lock:
            evicted = self._remove_cidr(self._index.eni(eni_id), network, force=force)
        return self._evicted(evicted)

    def remove_cidrs(self, eni_id: str, cidrs: Sequence[PodCidr]) -> tuple[PodCidr, ...]:
        """The CIDRs removed: those of the ENI holding no pod (an unknown ENI has none)."""
        removed: list[PodCidr] = []
        with self._lock:
            eni = self._index.enis.get(eni_id)
            if eni is None:
                return ()
            for network in cidrs:
                cidr = eni.cidrs.get(network)
                if cidr is not None and not cidr.assigned:
                    self._index.drop_cidr(cidr)
                    removed.append(network)
        return tuple(removed)

    def force_remove_cidrs(self, eni_id: str, cidrs: Sequence[PodCidr]) -> int:
        """Remove the CIDRs even if pods hold addresses in them; returns how many pods lost theirs."""
        with self._lock:
            eni = self._index.enis.get(eni_id)
            if eni is None:
                return 0
            evicted = tuple(view for n in cidrs for view in self._remove_cidr(eni, n, force=True))
        return len(self._evicted(evicted))

    def evict_eni(self, eni_id: str) -> tuple[AssignedAddress, ...]:
        """Force-remove an ENI that is no longer attached; returns the pods that lost their address."""
        with self._lock:
            eni = self._index.enis.get(eni_id)
            evicted = self._drop(self._index.drop_eni(eni)) if eni is not None else ()
        return self._evicted(evicted)

    def remove_eni(self, eni_id: str, *, force: bool = False) -> bool:
        with self._lock:
            eni = self._index.enis.get(eni_id)
            if eni is None or (eni.assigned and not force):
                return False
            evicted = self._drop(self._index.drop_eni(eni))
        self._evicted(evicted)
        return True

    def set_excluded(self, eni_id: str, excluded: bool = True) -> None:
        """Excluded ENIs (subnet tagged kubernetes.io/role/cni=0) keep their pods but get no new ones."""
        with self._lock:
            eni = self._index.eni(eni_id)
            if eni.excluded != excluded:
                self._index.set_excluded(eni, excluded)
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
        return view, self._durability.in_background(commit)

    def _assign_change(
        self, key: IPAMKey, metadata: PodMetadata
    ) -> tuple[AssignedAddress, Callable[[], None]]:
        """Make the assignment in memory; returns it and the call that records it in the checkpoint."""
        who = f"{metadata.namespace}/{metadata.name}"
        with self._lock:
            self._expire()
            known = self._index.by_key.get(key)
            if known is not None:
                view, version = self._view(known), self._durability.version
                # The first ADD of this key may still be waiting for its write.
                return view, lambda: self._durability.record(version, what=f"{view.ip} for {who}")
            addr = self._index.take()
            if addr is None:
                raise NoAddressAvailable(self._counts())
            self._bind(addr, key, metadata, assigned_ns=self._epoch_ns())
            view, version, serial = self._view(addr), self._durability.changed(), addr.serial

        def roll_back() -> None:
            if addr.key == key and addr.serial == serial:
                self._release_record(addr, cooldown=False)

        return view, lambda: self._durability.record(
            version, roll_back, what=f"{view.ip} for {who}", outcome="; the assignment was rolled back"
        )

    def release(self, key: IPAMKey) -> AssignedAddress:
        """Unassign the key's address (falls back to the legacy CRI key); it then cools down.

        Raises UnknownPod, or CheckpointWriteFailed (still assigned).
        """
        with self._lock:
            self._expire()
            addr = self._index.lookup(key)
            if addr is None:
                raise UnknownPod(key)
            released = self._view(addr)
            self._release_record(addr, cooldown=True)
            version, serial = self._durability.changed(), addr.serial

        def roll_back() -> None:
            if addr.key is None and addr.serial == serial and not addr.cidr.removed:
                self._index.place(addr.cidr, addr.ip)  # no longer free or cooling
                self._bind(addr, released.key, released.metadata, assigned_ns=released.assigned_at_ns)

        self._durability.record(
            version, roll_back, what=f"the release of {released.ip}", outcome="; it stays assigned"
        )
        return released

    def lookup(self, key: IPAMKey) -> AssignedAddress | None:
        with self._lock:
            addr = self._index.lookup(key)
            return None if addr is None else self._view(addr)

    def assigned(self) -> tuple[AssignedAddress, ...]:
        with self._lock:
            return tuple(self._view(a) for a in self._index.by_key.values())

    def wait_for_change(self, timeout_s: float) -> None:
        """Block until CIDRs are added or an address frees up (or cooldown ends), at most `timeout_s`."""
        with self._lock:
            next_free = self._cooldown.next_free_in(now=self._clock.monotonic())
            wait = timeout_s if next_free is None else min(timeout_s, next_free)
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
                cidr = self._index.cidr_holding(entry.ip)
                if cidr is None or entry.key in self._index.by_key or self._index.is_taken(cidr, entry.ip):
                    stale.append(entry)
                    continue
                addr = self._index.place(cidr, entry.ip)
                self._index.bind(addr, entry.key, entry.metadata, entry.allocation_timestamp_ns, entry)
                restored.append(entry)
        return restored, stale

    def persist(self) -> None:
        """Rewrite the checkpoint from the current state, changed or not (raises OSError)."""
        self._durability.commit(self._durability.current(), force=True)

    # --- views -------------------------------------------------------------------------------------------

    def snapshot(self) -> PoolSnapshot:
        with self._lock:
            self._expire()
            return views.snapshot(self._index, now=self._clock.monotonic())

    def freeable_cidrs(self, eni_id: str) -> tuple[PodCidr, ...]:
        """CIDRs of the ENI with no pod and nothing in cooldown: safe to give back to EC2."""
        with self._lock:
            self._expire()
            eni = self._index.eni(eni_id)
            return tuple(c.network for c in eni.cidrs.values() if c.assigned == 0 and c.cooling == 0)

    def eni_counts(self, eni_id: str) -> EniCounts:
        with self._lock:
            self._expire()
            eni = self._index.eni(eni_id)
            total = sum(c.network.num_addresses for c in eni.cidrs.values())
            return EniCounts(eni_id=eni_id, total=total, assigned=eni.assigned, in_cooldown=eni.cooling)

    def eni_record(self, eni_id: str) -> EniRecord | None:
        with self._lock:
            eni = self._index.enis.get(eni_id)
            return None if eni is None else eni.record

    def counts(self) -> PoolCounts:
        with self._lock:
            self._expire()
            return self._counts()

    def eni_infos(self) -> dict[str, Any]:
        """Upstream's ENIInfos JSON (`/v1/enis` value for this card), unscrubbed."""
        with self._lock:
            self._expire()
            return views.eni_infos_json(self._index.enis.values(), self._network_card)

    # --- internals (lock held) ---------------------------------------------------------------------------

    def _epoch_ns(self) -> int:
        return int(self._clock.now().timestamp() * 1_000_000_000)

    def _bind(self, addr: AddressRecord, key: IPAMKey, metadata: PodMetadata, *, assigned_ns: int) -> None:
        entry = CheckpointEntry(key=key, ip=addr.ip, allocation_timestamp_ns=assigned_ns, metadata=metadata)
        self._index.bind(addr, key, metadata, assigned_ns, entry)

    def _release_record(self, addr: AddressRecord, *, cooldown: bool) -> None:
        self._index.unbind(addr, unassigned_ns=self._epoch_ns())
        if cooldown and self._cooldown.enabled:
            self._index.cool(addr)
            self._cooldown.start(addr, now=self._clock.monotonic())
        else:
            self._index.warm(addr)
            self._changed.notify_all()

    def _expire(self) -> None:
        freed = False
        for addr in self._cooldown.expired(now=self._clock.monotonic()):
            self._index.warm(addr)
            freed = True
        if freed:
            self._changed.notify_all()

    def _remove_cidr(self, eni: EniState, network: PodCidr, *, force: bool) -> tuple[AssignedAddress, ...]:
        cidr = eni.cidrs.get(network)
        if cidr is None:
            return ()
        if cidr.assigned and not force:
            raise CidrInUse(network, cidr.assigned)
        return self._drop(self._index.drop_cidr(cidr))

    def _drop(self, evicted: list[AddressRecord]) -> tuple[AssignedAddress, ...]:
        """Views of the records a removal evicted (the change is numbered: the checkpoint must follow)."""
        if evicted:
            self._durability.changed()
        gone = tuple(self._view(a) for a in evicted)
        for view in gone:
            _log.warning(
                "evicted %s of %s/%s: %s was removed",
                view.ip,
                view.metadata.namespace,
                view.metadata.name,
                view.cidr,
            )
        return gone

    def _evicted(self, evicted: tuple[AssignedAddress, ...]) -> tuple[AssignedAddress, ...]:
        """Record evictions in the checkpoint (lock released)."""
        if evicted:
            self._durability.catch_up("evicting pods")
        return evicted

    def _counts(self) -> PoolCounts:
        return views.counts(
            self._index, next_free_in_s=self._cooldown.next_free_in(now=self._clock.monotonic())
        )

    def _view(self, addr: AddressRecord) -> AssignedAddress:
        return views.assigned(addr, network_card=self._network_card)
