"""Stateful fakes of EC2 and IMDS for one instance (`CloudPort`, `MetadataPort`), for tests only (product code
never imports them)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from vpccni.ipamd.ports import (
    NO_USABLE_SUBNET_CODE,
    CloudError,
    EniAddresses,
    EniDescription,
    EniRequest,
)
from vpccni.networkutils.model import IPNetwork

_DEFAULT_SUBNET = IPv4Network("10.0.0.0/16")
_DEFAULT_SUBNET_V6 = IPv6Network("2001:db8:0:100::/64")


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
