"""Stateful fakes of the ipamd ports, for tests only (product code never imports this module)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any

from vpccni.awsutils.clock import Clock
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.datastore.model import UnknownEni
from vpccni.ipamd.pool.cooldown import ReconcileCooldown
from vpccni.ipamd.pool.eni_actions import store_eni
from vpccni.ipamd.pool.snapshot import CidrSnapshot, EniSnapshot, PoolSnapshot
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.ipamd.ports import (
    NO_USABLE_SUBNET_CODE,
    CloudError,
    EniAddresses,
    EniDescription,
    EniRecord,
    EniRequest,
    is_secondary_ip,
)
from vpccni.ipamd.reconcile import Reconciler
from vpccni.networkutils.model import IPAddress, IPNetwork

_DEFAULT_SUBNET = IPv4Network("10.0.0.0/16")
_DEFAULT_SUBNET_V6 = IPv6Network("2001:db8:0:100::/64")


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


@dataclass(kw_only=True)
class _CloudEni:
    eni_id: str
    mac: str
    device_number: int
    network_card: int
    primary_ip: IPv4Address
    subnet_id: str
    interface_type: str = "interface"
    tags: dict[str, str] = field(default_factory=dict)
    ips: set[IPv4Address] = field(default_factory=set)
    prefixes: set[IPv4Network] = field(default_factory=set)
    ipv6_prefixes: set[IPv6Network] = field(default_factory=set)

    def describe(self) -> EniDescription:
        return EniDescription(
            eni_id=self.eni_id,
            mac=self.mac,
            device_number=self.device_number,
            network_card=self.network_card,
            primary_ip=self.primary_ip,
            secondary_ips=frozenset(self.ips),
            prefixes=frozenset(self.prefixes),
            ipv6_prefixes=frozenset(self.ipv6_prefixes),
            subnet_id=self.subnet_id,
            interface_type=self.interface_type,
            tags=tuple(sorted(self.tags.items())),
        )


class FakeCloud:
    """EC2 for one instance: ENIs with their addresses, drawn from a subnet; failures can be queued per call.

    `ipv4_per_eni` is the instance's IPv4 addresses per ENI including the ENI's primary one.
    """

    def __init__(
        self,
        *,
        max_enis: int = 3,
        ipv4_per_eni: int = 4,
        subnet: IPv4Network = _DEFAULT_SUBNET,
        subnet_id: str = "subnet-0fake",
        other_subnets: tuple[str, ...] = (),
    ) -> None:
        self.max_enis = max_enis
        self.ipv4_per_eni = ipv4_per_eni
        self.subnet_id = subnet_id
        # Where a new ENI may go, in order (the primary subnet first, as subnet discovery ranks them here).
        self.candidate_subnets = (subnet_id, *other_subnets)
        self.calls: list[str] = []
        self.on_call: Callable[[str], None] = lambda name: None
        self._failures: dict[str, list[CloudError]] = {}
        self._enis: dict[str, _CloudEni] = {}
        half = list(subnet.subnets(prefixlen_diff=1))
        self._free_ips = (ip for ip in half[0].hosts())
        self._free_prefixes = iter(half[1].subnets(new_prefix=28))
        self._free_ipv6_prefixes = iter(_DEFAULT_SUBNET_V6.subnets(new_prefix=80))
        self._ids = itertools.count(1)
        self.lock = threading.Lock()

    # test helpers
    def fail(self, call: str, error: CloudError, times: int = 1) -> None:
        self._failures.setdefault(call, []).extend([error] * times)

    def add_existing_eni(
        self,
        *,
        device_number: int,
        ips: int = 0,
        interface_type: str = "interface",
        tags: dict[str, str] | None = None,
        network_card: int = 0,
    ) -> EniDescription:
        eni = self._new_eni(device_number, network_card, interface_type)
        eni.tags.update(tags or {})
        eni.ips.update(next(self._free_ips) for _ in range(ips))
        return eni.describe()

    def eni(self, eni_id: str) -> EniDescription:
        return self._enis[eni_id].describe()

    def eni_ids(self) -> set[str]:
        return set(self._enis)

    def remove_ip_behind_our_back(self, eni_id: str, ip: IPv4Address) -> None:
        """Another actor unassigned an address (what IMDS then keeps listing for a while)."""
        self._enis[eni_id].ips.discard(ip)

    def add_ip_behind_our_back(self, eni_id: str) -> IPv4Address:
        ip = next(self._free_ips)
        self._enis[eni_id].ips.add(ip)
        return ip

    def remove_ipv6_prefixes_behind_our_back(self, eni_id: str) -> set[IPv6Network]:
        """Another actor unassigned the ENI's /80s."""
        gone, self._enis[eni_id].ipv6_prefixes = self._enis[eni_id].ipv6_prefixes, set()
        return gone

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        self.on_call(name)
        queued = self._failures.get(name)
        if queued:
            raise queued.pop(0)

    def _new_eni(self, device_number: int, network_card: int, interface_type: str) -> _CloudEni:
        n = next(self._ids)
        eni = _CloudEni(
            eni_id=f"eni-{n:08x}",
            mac=f"02:00:00:00:{n // 256:02x}:{n % 256:02x}",
            device_number=device_number,
            network_card=network_card,
            primary_ip=next(self._free_ips),
            subnet_id=self.subnet_id,
            interface_type=interface_type,
        )
        self._enis[eni.eni_id] = eni
        return eni

    # CloudPort
    def allocate_eni(self, request: EniRequest) -> EniDescription:
        with self.lock:
            self._enter("allocate_eni")
            used = {e.device_number for e in self._enis.values() if e.network_card == request.network_card}
            if len(self._enis) >= self.max_enis:
                raise CloudError("AttachmentLimitExceeded", code="AttachmentLimitExceeded")
            candidates = (request.subnet_id,) if request.subnet_id else self.candidate_subnets
            usable = [s for s in candidates if s not in request.avoid_subnets]
            if not usable:
                raise CloudError(
                    "every candidate subnet rests", code=NO_USABLE_SUBNET_CODE,
                    subnet_ids=tuple(sorted(request.avoid_subnets)),
                )  # fmt: skip
            device = min(d for d in range(100) if d not in used)
            eni = self._new_eni(device, request.network_card, "interface")
            eni.subnet_id = usable[0]
            limit = self.ipv4_per_eni - 1
            eni.ips.update(next(self._free_ips) for _ in range(min(request.ips, limit)))
            eni.prefixes.update(next(self._free_prefixes) for _ in range(min(request.prefixes, limit)))
            return eni.describe()

    def assign_ips(self, eni_id: str, count: int) -> tuple[IPv4Address, ...]:
        with self.lock:
            self._enter("assign_ips")
            eni = self._enis[eni_id]
            if len(eni.ips) + len(eni.prefixes) + count > self.ipv4_per_eni - 1:
                raise CloudError("too many addresses for this ENI", code="PrivateIpAddressLimitExceeded")
            new = tuple(next(self._free_ips) for _ in range(count))
            eni.ips.update(new)
            return new

    def assign_prefixes(self, eni_id: str, count: int) -> tuple[IPv4Network, ...]:
        with self.lock:
            self._enter("assign_prefixes")
            eni = self._enis[eni_id]
            if len(eni.ips) + len(eni.prefixes) + count > self.ipv4_per_eni - 1:
                raise CloudError("too many prefixes for this ENI", code="PrivateIpAddressLimitExceeded")
            new = tuple(next(self._free_prefixes) for _ in range(count))
            eni.prefixes.update(new)
            return new

    def assign_ipv6_prefix(self, eni_id: str) -> tuple[IPv6Network, ...]:
        with self.lock:
            self._enter("assign_ipv6_prefix")
            new = (next(self._free_ipv6_prefixes),)
            self._enis[eni_id].ipv6_prefixes.update(new)
            return new

    def unassign(
        self, eni_id: str, *, ips: Sequence[IPv4Address] = (), prefixes: Sequence[IPNetwork] = ()
    ) -> None:
        with self.lock:
            self._enter("unassign")
            eni = self._enis[eni_id]
            eni.ips.difference_update(ips)
            eni.prefixes.difference_update(p for p in prefixes if isinstance(p, IPv4Network))
            eni.ipv6_prefixes.difference_update(p for p in prefixes if isinstance(p, IPv6Network))

    def free_eni(self, eni_id: str) -> None:
        with self.lock:
            self._enter("free_eni")
            self._enis.pop(eni_id, None)

    def describe_enis(self, eni_ids: Sequence[str]) -> tuple[EniDescription, ...]:
        with self.lock:
            self._enter("describe_enis")
            return tuple(self._enis[i].describe() for i in eni_ids if i in self._enis)

    def tag_eni(self, eni_id: str, tags: dict[str, str]) -> None:
        with self.lock:
            self._enter("tag_eni")
            self._enis[eni_id].tags.update(tags)


class FakeImds:
    """IMDS backed by a `FakeCloud`; `freeze()` makes it lag (keep answering with what EC2 had then), and
    `outage` (an error) makes it refuse every read."""

    def __init__(self, cloud: FakeCloud) -> None:
        self._cloud = cloud
        self._frozen: tuple[EniAddresses, ...] | None = None
        self.phantom_ips: dict[str, set[IPv4Address]] = {}  # addresses IMDS lists but EC2 never had
        self.phantom_ipv6_prefixes: dict[str, set[IPv6Network]] = {}
        self.outage: CloudError | None = None

    def freeze(self) -> None:
        self._frozen = self._live()

    def catch_up(self) -> None:
        self._frozen = None

    def _live(self) -> tuple[EniAddresses, ...]:
        with self._cloud.lock:
            return tuple(e.describe().addresses_only() for e in self._cloud._enis.values())

    def attached_enis(self) -> tuple[EniAddresses, ...]:
        if self.outage is not None:
            raise self.outage
        enis = self._frozen if self._frozen is not None else self._live()
        return tuple(
            replace(
                e,
                secondary_ips=e.secondary_ips | self.phantom_ips.get(e.eni_id, set()),
                ipv6_prefixes=e.ipv6_prefixes | self.phantom_ipv6_prefixes.get(e.eni_id, set()),
            )
            for e in enis
        )


class FakeNodeNetwork:
    """Records which ENIs have host networking; `fail_setup` makes the next setup raise."""

    def __init__(self) -> None:
        self.set_up: set[str] = set()
        self.torn_down: list[str] = []
        self.fail_setup = 0

    def setup_eni(self, eni: EniAddresses) -> None:
        if self.fail_setup:
            self.fail_setup -= 1
            raise OSError(f"no link with MAC {eni.mac}")
        self.set_up.add(eni.eni_id)

    def teardown_eni(self, *, eni_id: str, device_number: int, primary_ip: IPv4Address | None) -> None:
        self.set_up.discard(eni_id)
        self.torn_down.append(eni_id)


class FakeHostNetwork:
    def __init__(self, *, error: Exception | None = None) -> None:
        self.error = error
        self.setups = 0

    def setup_host_network(self) -> None:
        if self.error is not None:
            raise self.error
        self.setups += 1


class FakeAllocationRestore:
    """Restores `allocations` pods: assigns that many addresses in the store, as the checkpoint would."""

    def __init__(self, store: FakePoolStore, *, allocations: int = 0) -> None:
        self._store = store
        self._allocations = allocations
        self.restored: list[IPAddress] = []

    def restore_allocations(self) -> int:
        for _ in range(self._allocations):
            ip = self._store.assign_pod()
            if ip is not None:
                self.restored.append(ip)
        return len(self.restored)


class IdlePool:
    """The pool manager as the allocator sees it (`PoolSignals`), never growing: an ADD that finds its
    datastore empty fails at once, with `state` as the reason."""

    def __init__(self, state: GrowthState = GrowthState.NO_ENI_SLOTS) -> None:
        self.status = PoolStatus(state=state)
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def wake_if_low(self, snapshot: PoolSnapshot) -> bool:
        return False

    def waiting(self) -> AbstractContextManager[None]:
        return nullcontext()


class FakePodRules:
    def __init__(self) -> None:
        self.runs = 0

    def configure_pod_rules(self) -> None:
        self.runs += 1


@dataclass(kw_only=True)
class FakeNode:
    """One instance's fakes wired together: EC2, an IMDS that can lag, the datastore, host networking."""

    clock: FakeClock
    cloud: FakeCloud
    imds: FakeImds
    store: FakePoolStore
    network: FakeNodeNetwork
    cooldown: ReconcileCooldown
    primary: EniDescription

    @classmethod
    def create(
        cls, *, max_enis: int = 3, ipv4_per_eni: int = 4, primary_ips: int = 0, store_primary: bool = True,
        other_subnets: tuple[str, ...] = (),
    ) -> FakeNode:  # fmt: skip
        clock = FakeClock()
        cloud = FakeCloud(max_enis=max_enis, ipv4_per_eni=ipv4_per_eni, other_subnets=other_subnets)
        primary = cloud.add_existing_eni(device_number=0, ips=primary_ips)
        store = FakePoolStore(clock=clock)
        if store_primary:
            store_eni(store, primary, is_primary=True)
        return cls(
            clock=clock,
            cloud=cloud,
            imds=FakeImds(cloud),
            store=store,
            network=FakeNodeNetwork(),
            cooldown=ReconcileCooldown(clock=clock),
            primary=primary,
        )

    def make_reconciler(self, **options: Any) -> Reconciler:
        return Reconciler(
            store=self.store,
            cloud=self.cloud,
            metadata=self.imds,
            network=self.network,
            cooldown=self.cooldown,
            primary_eni_id=self.primary.eni_id,
            **options,
        )

    def ec2_cidrs(self, *, ipv6: bool = False) -> set[IPNetwork]:
        return {c for i in self.cloud.eni_ids() for c in self.cloud.eni(i).pool_cidrs(ipv6=ipv6)}

    def store_cidrs(self) -> set[IPNetwork]:
        return {c for i in self.store.eni_ids() for c in self.store.cidrs_of(i)}
