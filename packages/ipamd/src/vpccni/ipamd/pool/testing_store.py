"""A stateful fake of the datastore's `PoolStore` operations, for tests only (product code never imports
it)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vpccni.awsutils.clock import Clock
from vpccni.ipamd.datastore.model import UnknownEni
from vpccni.ipamd.pool.snapshot import CidrSnapshot, EniSnapshot, PoolSnapshot
from vpccni.ipamd.ports import EniRecord, is_secondary_ip
from vpccni.networkutils.model import IPAddress, IPNetwork


@dataclass(kw_only=True)
class _StoreCidr:
    is_prefix: bool
    assigned: set[IPAddress] = field(default_factory=set)
    cooling_until: dict[IPAddress, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class _StoreEni:
    record: EniRecord
    added_at: float
    excluded: bool = False
    cidrs: dict[IPNetwork, _StoreCidr] = field(default_factory=dict)


class FakePoolStore:
    """An in-memory datastore with the `PoolStore` operations plus pod assign/release for driving tests."""

    def __init__(self, *, clock: Clock, ip_cooldown_s: float = 30.0) -> None:
        self._clock = clock
        self._ip_cooldown_s = ip_cooldown_s
        self._enis: dict[str, _StoreEni] = {}
        self.lock = threading.Lock()
        self.force_removed_pods: list[IPAddress] = []

    # PoolStore
    def snapshot(self) -> PoolSnapshot:
        with self.lock:
            now = self._clock.monotonic()
            enis = tuple(self._eni_snapshot(e, now) for e in self._enis.values())
        return PoolSnapshot(enis=enis)

    def _eni_snapshot(self, eni: _StoreEni, now: float) -> EniSnapshot:
        cidrs = tuple(
            CidrSnapshot(
                cidr=cidr,
                is_prefix=c.is_prefix,
                assigned=len(c.assigned),
                in_cooldown=sum(1 for until in c.cooling_until.values() if until > now),
            )
            for cidr, c in eni.cidrs.items()
        )
        r = eni.record
        return EniSnapshot(
            eni_id=r.eni_id,
            device_number=r.device_number,
            is_primary=r.is_primary,
            is_trunk=r.is_trunk,
            is_efa=r.is_efa,
            excluded=eni.excluded,
            age_s=now - eni.added_at,
            cidrs=cidrs,
            primary_ip=r.primary_ip,
            subnet_id=r.subnet_id,
        )

    def add_eni(self, eni: EniRecord) -> None:
        with self.lock:
            known = self._enis.get(eni.eni_id)
            if known is not None:
                known.record = eni  # as the datastore: idempotent, the CIDRs stay
            else:
                self._enis[eni.eni_id] = _StoreEni(record=eni, added_at=self._clock.monotonic())

    def add_cidrs(self, eni_id: str, cidrs: Sequence[IPNetwork], *, is_prefix: bool) -> None:
        with self.lock:
            eni = self._enis.get(eni_id)
            if eni is None:
                raise UnknownEni(eni_id)
            for cidr in cidrs:
                if is_secondary_ip(cidr) == is_prefix:
                    raise ValueError(f"{cidr} is not a {'delegated prefix' if is_prefix else 'secondary IP'}")
                eni.cidrs.setdefault(cidr, _StoreCidr(is_prefix=is_prefix))

    def remove_cidrs(self, eni_id: str, cidrs: Sequence[IPNetwork]) -> tuple[IPNetwork, ...]:
        with self.lock:
            eni = self._enis.get(eni_id)
            if eni is None:
                return ()
            removed = tuple(c for c in cidrs if c in eni.cidrs and not eni.cidrs[c].assigned)
            for cidr in removed:
                del eni.cidrs[cidr]
            return removed

    def force_remove_cidrs(self, eni_id: str, cidrs: Sequence[IPNetwork]) -> int:
        with self.lock:
            eni = self._enis.get(eni_id)
            if eni is None:
                return 0
            pods = 0
            for cidr in cidrs:
                entry = eni.cidrs.pop(cidr, None)
                if entry is not None:
                    pods += len(entry.assigned)
                    self.force_removed_pods.extend(entry.assigned)
            return pods

    def remove_eni(self, eni_id: str, *, force: bool = False) -> bool:
        with self.lock:
            eni = self._enis.get(eni_id)
            if eni is None:
                return False
            in_use = [ip for c in eni.cidrs.values() for ip in c.assigned]
            if in_use and not force:
                return False
            self.force_removed_pods.extend(in_use)
            del self._enis[eni_id]
            return True

    # Test drivers
    def assign_pod(self, *, prefix_mode: bool = False) -> IPAddress | None:
        """Give a pod the first free address: ENIs in device order, CIDRs in the order they were added."""
        with self.lock:
            now = self._clock.monotonic()
            for eni in sorted(self._enis.values(), key=lambda e: e.record.device_number):
                if eni.excluded:
                    continue
                for cidr, entry in eni.cidrs.items():
                    if entry.is_prefix != prefix_mode:
                        continue
                    for ip in _hosts(cidr):
                        if ip in entry.assigned or entry.cooling_until.get(ip, 0.0) > now:
                            continue
                        entry.assigned.add(ip)
                        entry.cooling_until.pop(ip, None)
                        return ip
            return None

    def release_pod(self, ip: IPAddress) -> None:
        with self.lock:
            for eni in self._enis.values():
                for cidr, entry in eni.cidrs.items():
                    if ip in cidr and ip in entry.assigned:
                        entry.assigned.discard(ip)
                        entry.cooling_until[ip] = self._clock.monotonic() + self._ip_cooldown_s
                        return
        raise KeyError(f"{ip} is not assigned")

    def set_excluded(self, eni_id: str, excluded: bool = True) -> None:
        with self.lock:
            self._enis[eni_id].excluded = excluded

    def eni_ids(self) -> set[str]:
        with self.lock:
            return set(self._enis)

    def cidrs_of(self, eni_id: str) -> set[IPNetwork]:
        with self.lock:
            return set(self._enis[eni_id].cidrs)

    def assigned_addresses(self) -> set[IPAddress]:
        with self.lock:
            return {ip for e in self._enis.values() for c in e.cidrs.values() for ip in c.assigned}


def _hosts(cidr: IPNetwork) -> Iterable[IPAddress]:
    # Every address of a delegated /28 or /80 is usable (upstream); a /32 is its own address. Lazily: a /80
    # holds 2^48.
    if cidr.prefixlen == cidr.max_prefixlen:
        return [cidr.network_address]
    return (cidr.network_address + offset for offset in range(cidr.num_addresses))
