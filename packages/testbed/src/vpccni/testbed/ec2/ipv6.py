"""IPv6 in a subnet's /64, as EC2 hands it out: addresses and delegated /80 prefixes never overlap.

EC2 reserves the first four addresses and the last one of a subnet's IPv6 CIDR as it does for IPv4. A /80
prefix is a free, aligned /80 of the /64: none of its addresses is assigned and no other prefix overlaps it.
A /64 holds 2^64 addresses, so nothing here lists them: the taken ones are few, and the candidates are walked
lazily from the bottom of the subnet (or drawn at random, as EC2 does, with `Placement.RANDOM`).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from vpccni.testbed.ec2.addresses import Placement
from vpccni.testbed.ec2.errors import Ec2Error

PREFIX_LEN = 80
_RANDOM_TRIES = 64


def reserved_ipv6(subnet: ipaddress.IPv6Network) -> set[ipaddress.IPv6Address]:
    first = subnet.network_address
    return {first + i for i in range(4)} | {subnet.broadcast_address}


@dataclass(frozen=True, kw_only=True)
class Ipv6Usage:
    """What is taken in a subnet's IPv6 CIDR: every ENI's IPv6 addresses and every delegated /80."""

    cidr: ipaddress.IPv6Network
    addresses: frozenset[ipaddress.IPv6Address]
    prefixes: frozenset[ipaddress.IPv6Network]

    def taken(self, ip: ipaddress.IPv6Address) -> bool:
        return (
            ip in self.addresses
            or ip in reserved_ipv6(self.cidr)
            or any(ip in prefix for prefix in self.prefixes)
        )

    def prefix_free(self, block: ipaddress.IPv6Network) -> bool:
        return (
            block.subnet_of(self.cidr)
            and not any(block.overlaps(p) for p in self.prefixes)
            and not any(ip in block for ip in (*self.addresses, *reserved_ipv6(self.cidr)))
        )


class Ipv6Allocator:
    def __init__(self, *, placement: Placement = Placement.LOWEST, seed: int = 0) -> None:
        self._placement = placement
        self._rng = random.Random(seed)

    def pick_addresses(
        self, usage: Ipv6Usage, count: int, *, also_taken: Iterable[ipaddress.IPv6Address] = ()
    ) -> list[ipaddress.IPv6Address]:
        extra = set(also_taken)
        picked = _first(
            count,
            self._candidates(usage.cidr, 128),
            lambda ip, chosen: not usage.taken(ip.network_address) and ip.network_address not in extra,
        )
        if len(picked) < count:
            raise Ec2Error(
                "InsufficientFreeAddressesInSubnet",
                f"The specified subnet {usage.cidr} has no {count} free IPv6 addresses",
            )
        return [net.network_address for net in picked]

    def pick_prefixes(self, usage: Ipv6Usage, count: int) -> list[ipaddress.IPv6Network]:
        picked = _first(
            count,
            self._candidates(usage.cidr, PREFIX_LEN),
            lambda block, chosen: usage.prefix_free(block) and not any(block.overlaps(p) for p in chosen),
        )
        if len(picked) < count:
            raise Ec2Error(
                "InsufficientCidrBlocks",
                f"The specified subnet {usage.cidr} does not have {count} free IPv6 /80 prefixes",
            )
        return picked

    def _candidates(self, cidr: ipaddress.IPv6Network, prefixlen: int) -> Iterator[ipaddress.IPv6Network]:
        if prefixlen < cidr.prefixlen:  # a /80 does not fit in a smaller subnet
            return
        blocks = 1 << (prefixlen - cidr.prefixlen)
        size = 1 << (128 - prefixlen)
        if self._placement is Placement.RANDOM:
            indexes: Iterable[int] = (self._rng.randrange(blocks) for _ in range(_RANDOM_TRIES))
        else:
            indexes = range(blocks)
        for index in indexes:
            yield ipaddress.IPv6Network((cidr.network_address + index * size, prefixlen))


def _first(
    count: int,
    candidates: Iterator[ipaddress.IPv6Network],
    fits: Callable[[ipaddress.IPv6Network, list[ipaddress.IPv6Network]], bool],
) -> list[ipaddress.IPv6Network]:
    """Up to `count` distinct candidates that fit next to those already chosen."""
    picked: list[ipaddress.IPv6Network] = []
    for candidate in candidates:
        if len(picked) == count:
            break
        if candidate not in picked and fits(candidate, picked):
            picked.append(candidate)
    return picked
