"""EC2's IPv6 address calls, which moto lacks: `AssignIpv6Addresses` / `UnassignIpv6Addresses` with addresses
and /80 prefixes (counts or named), per-interface limits (a prefix counts as an address), Nitro only for
prefixes, and each subnet's /64 accounting."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from vpccni.testbed.ec2 import xmlpatch
from vpccni.testbed.ec2.backend import MotoBackend
from vpccni.testbed.ec2.errors import Ec2Error
from vpccni.testbed.ec2.instance_types import limits_for
from vpccni.testbed.ec2.ipv6 import Ipv6Allocator, Ipv6Usage
from vpccni.testbed.ec2.prefixes import PrefixTable
from vpccni.testbed.ec2.query import indexed, integer, ipv6, ipv6_prefix
from vpccni.testbed.events import AddressesChanged, Event

Params = dict[str, str]


class Ipv6Calls:
    """Runs under the fidelity layer's hooks (the server's state lock held)."""

    def __init__(
        self,
        *,
        backend: MotoBackend,
        prefixes: PrefixTable[ipaddress.IPv6Network],
        allocator: Ipv6Allocator,
        check_prefix_support: Callable[[Any], None],
    ) -> None:
        self._backend = backend
        self._prefixes = prefixes
        self.allocator = allocator
        self._check_prefix_support = check_prefix_support

    def usage(self, subnet_id: str) -> Ipv6Usage:
        cidr = self._backend.subnet_ipv6_cidr(subnet_id)
        if cidr is None:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Subnet {subnet_id} has no IPv6 CIDR block: associate one (a /64 of the VPC's /56) first",
            )
        prefixes = [
            p
            for eni, ps in self._prefixes.all().items()
            if eni in self._backend.raw.enis and self._backend.raw.enis[eni].subnet.id == subnet_id
            for p in ps
        ]
        return Ipv6Usage(
            cidr=cidr,
            addresses=frozenset(self._backend.subnet_ipv6_addresses(subnet_id)),
            prefixes=frozenset(prefixes),
        )

    def _slots(self, eni: Any) -> int:
        """IPv6 slots an ENI uses: its addresses and one per /80 (EC2 counts a prefix as an address)."""
        return len(eni.ipv6_addresses) + len(self._prefixes.of(eni.id))

    def assign(self, params: Params) -> tuple[bytes, list[Event]]:
        eni_id = params.get("NetworkInterfaceId", "")
        eni = self._backend.eni(eni_id)
        explicit = [ipv6(v) for v in indexed(params, "Ipv6Addresses")]
        count = integer(params, "Ipv6AddressCount")
        explicit_prefixes = [ipv6_prefix(v) for v in indexed(params, "Ipv6Prefix")]
        prefix_count = integer(params, "Ipv6PrefixCount")
        if not (explicit or count or explicit_prefixes or prefix_count):
            raise Ec2Error(
                "MissingParameter",
                "Specify IPv6 addresses, an address count, IPv6 prefixes or a prefix count",
            )
        if explicit_prefixes or prefix_count:
            self._check_prefix_support(eni)
        usage = self.usage(eni.subnet.id)
        if eni.instance is not None:
            limit = limits_for(eni.instance.instance_type).ipv6_per_eni
            wanted = len(explicit) + count + len(explicit_prefixes) + prefix_count
            if self._slots(eni) + wanted > limit:
                raise Ec2Error(
                    "InvalidParameterValue",
                    f"{eni_id} would hold {self._slots(eni) + wanted} IPv6 addresses and prefixes, more "
                    f"than the {limit} per interface of {eni.instance.instance_type}",
                )
        for ip in explicit:
            if ip not in usage.cidr or usage.taken(ip):
                raise Ec2Error("InvalidIPAddress.InUse", f"Address {ip} is in use or not in {usage.cidr}")
        for prefix in explicit_prefixes:
            if prefix.prefixlen != 80 or not usage.prefix_free(prefix):
                raise Ec2Error(
                    "InvalidParameterValue", f"Prefix {prefix} is not a free /80 of subnet {usage.cidr}"
                )
        ips = explicit + self.allocator.pick_addresses(usage, count, also_taken=explicit)
        prefixes = explicit_prefixes + self.allocator.pick_prefixes(
            Ipv6Usage(
                cidr=usage.cidr,
                addresses=usage.addresses | set(ips),
                prefixes=usage.prefixes | set(explicit_prefixes),
            ),
            prefix_count,
        )
        if ips:
            current = [ipaddress.IPv6Address(a) for a in eni.ipv6_addresses]
            self._backend.set_eni_ipv6_addresses(eni_id, current + ips)
        self._prefixes.add(eni_id, prefixes)
        return _reply("Assign", eni_id, ips, prefixes)

    def unassign(self, params: Params) -> tuple[bytes, list[Event]]:
        eni_id = params.get("NetworkInterfaceId", "")
        eni = self._backend.eni(eni_id)
        ips = [ipv6(v) for v in indexed(params, "Ipv6Addresses")]
        prefixes = [ipv6_prefix(v) for v in indexed(params, "Ipv6Prefix")]
        if not ips and not prefixes:
            raise Ec2Error("MissingParameter", "Specify Ipv6Addresses or Ipv6Prefixes to unassign")
        current = [ipaddress.IPv6Address(a) for a in eni.ipv6_addresses]
        held = self._prefixes.of(eni_id)
        stray = [str(ip) for ip in ips if ip not in current] + [str(p) for p in prefixes if p not in held]
        if stray:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Some of the specified IPv6 addresses or prefixes are not assigned to interface {eni_id}: "
                f"{stray}",
            )
        self._backend.set_eni_ipv6_addresses(eni_id, [ip for ip in current if ip not in ips])
        self._prefixes.remove(eni_id, prefixes)
        return _reply("Unassign", eni_id, ips, prefixes)


def _reply(
    verb: str, eni_id: str, ips: list[ipaddress.IPv6Address], prefixes: list[ipaddress.IPv6Network]
) -> tuple[bytes, list[Event]]:
    """EC2's answer to `<verb>Ipv6Addresses` (Assign, Unassign): what changed, as item sets."""
    field = verb[0].lower() + verb[1:] + "ed"  # assigned, unassigned
    body = xmlpatch.render(
        f"{verb}Ipv6Addresses",
        [
            ("networkInterfaceId", eni_id),
            (f"{field}Ipv6Addresses", [str(ip) for ip in ips]),
            (f"{field}Ipv6PrefixSet", [str(p) for p in prefixes]),
        ],
    )
    return body, [AddressesChanged(eni_id=eni_id)]
