"""Subnet address accounting and allocation: secondary IPs and /28 prefixes never overlap, as in EC2.

EC2 reserves the first four addresses and the last one of every subnet; a /28 prefix needs 16 free
contiguous, aligned addresses, so a subnet whose free addresses are scattered runs out of prefixes
before it runs out of IPs.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from vpccni.testbed.ec2.errors import Ec2Error

PREFIX_LEN = 28


class Placement(Enum):
    """Where new secondary IPs land in the subnet: lowest free first, or scattered like EC2."""

    LOWEST = "lowest"
    RANDOM = "random"


def reserved_addresses(subnet: ipaddress.IPv4Network) -> set[ipaddress.IPv4Address]:
    first = subnet.network_address
    return {first + i for i in range(4)} | {subnet.broadcast_address}


@dataclass(frozen=True, kw_only=True)
class SubnetUsage:
    """What is taken in one subnet: every ENI's private IPs and every delegated prefix."""

    cidr: ipaddress.IPv4Network
    ips: frozenset[ipaddress.IPv4Address]
    prefixes: frozenset[ipaddress.IPv4Network]

    def taken(self) -> set[ipaddress.IPv4Address]:
        out = set(self.ips) | reserved_addresses(self.cidr)
        for prefix in self.prefixes:
            out.update(prefix)
        return out

    @property
    def available_count(self) -> int:
        """AvailableIpAddressCount as DescribeSubnets reports it."""
        return self.cidr.num_addresses - len(self.taken())

    def is_free(self, ip: ipaddress.IPv4Address) -> bool:
        return ip in self.cidr and ip not in self.taken()


class AddressAllocator:
    def __init__(self, *, placement: Placement = Placement.LOWEST, seed: int = 0) -> None:
        self._placement = placement
        self._rng = random.Random(seed)

    def pick_ips(
        self, usage: SubnetUsage, count: int, *, also_taken: Iterable[ipaddress.IPv4Address] = ()
    ) -> list[ipaddress.IPv4Address]:
        taken = usage.taken() | set(also_taken)
        if self._placement is Placement.LOWEST:
            # Walk up from the bottom, on integers, and stop once enough are found (a fleet's /17 has 32k).
            used = {int(ip) for ip in taken}
            first = int(usage.cidr.network_address)
            lowest = itertools.islice(
                (i for i in range(first, first + usage.cidr.num_addresses) if i not in used), count
            )
            found = [ipaddress.IPv4Address(i) for i in lowest]
            if len(found) == count:
                return found
        free = [ip for ip in usage.cidr if ip not in taken]
        if len(free) < count:
            raise Ec2Error(
                "InsufficientFreeAddressesInSubnet",
                f"The specified subnet {usage.cidr} has only {len(free)} free addresses, {count} requested: "
                "use a larger subnet or free addresses",
            )
        return sorted(self._rng.sample(free, count))

    def pick_prefixes(
        self, usage: SubnetUsage, count: int, *, also_taken: Iterable[ipaddress.IPv4Address] = ()
    ) -> list[ipaddress.IPv4Network]:
        taken = usage.taken() | set(also_taken)
        shift = 32 - PREFIX_LEN
        used_blocks = {int(ip) >> shift for ip in taken}
        blocks = (
            b
            for b in usage.cidr.subnets(new_prefix=PREFIX_LEN)
            if int(b.network_address) >> shift not in used_blocks
        )
        free_blocks = list(itertools.islice(blocks, count))
        if len(free_blocks) < count:
            free_blocks += list(blocks)  # only for the error's count
        if len(free_blocks) < count:
            raise Ec2Error(
                "InsufficientCidrBlocks",
                f"The specified subnet {usage.cidr} does not have enough contiguous free /28 blocks "
                f"({len(free_blocks)} free, {count} requested): use a subnet with more free space "
                "or a subnet CIDR reservation for prefixes",
            )
        return free_blocks[:count]
