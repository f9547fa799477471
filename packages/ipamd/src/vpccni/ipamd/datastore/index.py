"""The allocation index: ENI → CIDR → address, and pod key → address. No lock of its own: the datastore
holds its lock around every call.

Assign and release are O(1), amortised; nothing scans all addresses:
- `by_key`: pod key → address record (idempotent ADD, DEL lookup).
- per CIDR: `tracked` (address → record, only addresses ever handed out), `ready` (insertion-ordered set of
  tracked addresses that are free and out of cooldown) and `next_offset` (the lowest never-used offset;
  addresses at or above it are free and untracked). A CIDR can serve when `ready` is non-empty or
  `next_offset < size`.
- `serving[kind]`: insertion-ordered set of CIDRs of that kind on usable (not excluded) ENIs that can
  serve. `take` uses the first of the served kind; a CIDR leaves the set when it runs dry and rejoins when
  an address frees up.
- per CIDR and per ENI: `assigned` and `cooling` counters, kept in step with the above.
"""

from __future__ import annotations

from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry
from vpccni.ipamd.datastore.model import UnknownEni
from vpccni.ipamd.datastore.records import AddressRecord, CidrKind, CidrRecord, EniState, PodAddress, PodCidr
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.ports import EniRecord


class AllocationIndex:
    def __init__(self, *, serves: CidrKind) -> None:
        self.serves = serves
        self.enis: dict[str, EniState] = {}
        self.cidrs: dict[PodCidr, CidrRecord] = {}
        self.by_key: dict[IPAMKey, AddressRecord] = {}
        self._serving: dict[CidrKind, dict[PodCidr, CidrRecord]] = {kind: {} for kind in CidrKind}

    # --- ENIs and CIDRs ---------------------------------------------------------------------------------

    def eni(self, eni_id: str) -> EniState:
        eni = self.enis.get(eni_id)
        if eni is None:
            raise UnknownEni(eni_id)
        return eni

    def add_eni(self, record: EniRecord, *, now: float) -> None:
        """Idempotent: a known ENI gets the new record and keeps its CIDRs."""
        known = self.enis.get(record.eni_id)
        if known is not None:
            known.record = record
        else:
            self.enis[record.eni_id] = EniState(record, now)

    def add_cidr(self, eni: EniState, network: PodCidr, kind: CidrKind) -> None:
        if network in self.cidrs:
            return
        cidr = CidrRecord(network, kind, eni)
        eni.cidrs[network] = cidr
        eni.cidr_snaps = None
        self.cidrs[network] = cidr
        self.offer(cidr)

    def set_excluded(self, eni: EniState, excluded: bool) -> None:
        eni.excluded = excluded
        for cidr in eni.cidrs.values():
            if excluded:
                self._serving[cidr.kind].pop(cidr.network, None)
            else:
                self.offer(cidr)

    def drop_cidr(self, cidr: CidrRecord) -> list[AddressRecord]:
        """Forget a CIDR and everything in it; returns the records that were assigned (their pods' keys are
        dropped too)."""
        evicted = [a for a in cidr.tracked.values() if a.key is not None]
        for addr in evicted:
            assert addr.key is not None
            self.by_key.pop(addr.key, None)
        cidr.eni.assigned -= cidr.assigned
        cidr.eni.cooling -= cidr.cooling
        cidr.removed = True
        del cidr.eni.cidrs[cidr.network]
        cidr.eni.cidr_snaps = None
        del self.cidrs[cidr.network]
        self._serving[cidr.kind].pop(cidr.network, None)
        return evicted

    def drop_eni(self, eni: EniState) -> list[AddressRecord]:
        evicted = [a for cidr in list(eni.cidrs.values()) for a in self.drop_cidr(cidr)]
        del self.enis[eni.record.eni_id]
        return evicted

    def cidr_holding(self, ip: PodAddress) -> CidrRecord | None:
        """The CIDR an address lives in: its own /32, or the prefix around it."""
        for kind in CidrKind:
            if kind.version == ip.version:
                cidr = self.cidrs.get(kind.around(ip))
                if cidr is not None:
                    return cidr
        return None

    # --- addresses ------------------------------------------------------------------------------------

    def lookup(self, key: IPAMKey) -> AddressRecord | None:
        """The key's address, falling back to the key upstream gave allocations it migrated from the CRI."""
        return self.by_key.get(key) or self.by_key.get(key.legacy())

    def take(self) -> AddressRecord | None:
        """A free address of the served kind, out of the free structures; None when there is none."""
        serving = self._serving[self.serves]
        if not serving:
            return None
        cidr = next(iter(serving.values()))
        if cidr.ready:
            ip = next(iter(cidr.ready))
            del cidr.ready[ip]
            addr = cidr.tracked[ip]
        else:
            ip = cidr.base + cidr.next_offset
            cidr.next_offset += 1
            addr = AddressRecord(ip, cidr)
            cidr.tracked[ip] = addr
        if not cidr.can_serve():
            del serving[cidr.network]
        return addr

    def place(self, cidr: CidrRecord, ip: PodAddress) -> AddressRecord:
        """The record of a given address, out of the free and cooling structures (restore and roll-back put
        specific addresses back)."""
        addr = cidr.tracked.get(ip)
        if addr is None:
            offset = int(ip) - int(cidr.base)
            # Untracked offsets below `next_offset` don't exist, so track the skipped ones as ready.
            for skipped in range(cidr.next_offset, offset):
                skipped_ip = cidr.base + skipped
                cidr.tracked[skipped_ip] = AddressRecord(skipped_ip, cidr)
                cidr.ready[skipped_ip] = None
            cidr.next_offset = max(cidr.next_offset, offset + 1)
            addr = AddressRecord(ip, cidr)
            cidr.tracked[ip] = addr
        cidr.ready.pop(ip, None)
        if addr.cooling:
            addr.cooling = False
            self._count(cidr, cooling=-1)
        if not cidr.can_serve():
            self._serving[cidr.kind].pop(cidr.network, None)
        return addr

    def is_taken(self, cidr: CidrRecord, ip: PodAddress) -> bool:
        addr = cidr.tracked.get(ip)
        return addr is not None and addr.key is not None

    def bind(
        self,
        addr: AddressRecord,
        key: IPAMKey,
        metadata: PodMetadata,
        assigned_ns: int,
        entry: CheckpointEntry,
    ) -> None:
        addr.key, addr.metadata, addr.assigned_ns, addr.entry = key, metadata, assigned_ns, entry
        addr.serial += 1
        self.by_key[key] = addr
        self._count(addr.cidr, assigned=1)

    def unbind(self, addr: AddressRecord, *, unassigned_ns: int) -> None:
        """The address is no pod's any more; the caller cools it down or makes it ready."""
        if addr.key is not None:
            self.by_key.pop(addr.key, None)
        addr.key, addr.metadata, addr.entry = None, PodMetadata(), None
        addr.unassigned_ns = unassigned_ns
        addr.serial += 1
        self._count(addr.cidr, assigned=-1)

    def cool(self, addr: AddressRecord) -> None:
        addr.cooling = True
        self._count(addr.cidr, cooling=1)

    def warm(self, addr: AddressRecord) -> None:
        """Out of cooldown: free for the next pod."""
        if addr.cooling:
            addr.cooling = False
            self._count(addr.cidr, cooling=-1)
        addr.cidr.ready[addr.ip] = None
        self.offer(addr.cidr)

    def offer(self, cidr: CidrRecord) -> None:
        if not cidr.eni.excluded and not cidr.removed and cidr.can_serve():
            self._serving[cidr.kind].setdefault(cidr.network, cidr)

    @staticmethod
    def _count(cidr: CidrRecord, *, assigned: int = 0, cooling: int = 0) -> None:
        cidr.snap = cidr.eni.cidr_snaps = None
        cidr.assigned += assigned
        cidr.eni.assigned += assigned
        cidr.cooling += cooling
        cidr.eni.cooling += cooling
