"""The testbed's IPv6 allocator: addresses and /80 prefixes of a subnet's /64, never overlapping."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from vpccni.testbed.ec2.addresses import Placement
from vpccni.testbed.ec2.errors import Ec2Error
from vpccni.testbed.ec2.ipv6 import Ipv6Allocator, Ipv6Usage, reserved_ipv6

SUBNET = IPv6Network("2001:db8:0:100::/64")


def usage(addresses: set[IPv6Address] = set(), prefixes: set[IPv6Network] = set()) -> Ipv6Usage:  # noqa: B006
    return Ipv6Usage(cidr=SUBNET, addresses=frozenset(addresses), prefixes=frozenset(prefixes))


def test_addresses_skip_the_reserved_ones_and_those_taken() -> None:
    assert reserved_ipv6(SUBNET) == {SUBNET[0], SUBNET[1], SUBNET[2], SUBNET[3], SUBNET[-1]}
    picked = Ipv6Allocator().pick_addresses(usage({SUBNET[5]}), 2)
    assert picked == [SUBNET[4], SUBNET[6]]


def test_prefixes_are_free_aligned_slash_80s_clear_of_addresses_and_other_prefixes() -> None:
    taken = IPv6Network("2001:db8:0:100:1::/80")
    first, second = Ipv6Allocator().pick_prefixes(usage({SUBNET[4]}, {taken}), 2)
    # the first /80 holds the reserved addresses and ::4, the second is delegated already
    assert (first, second) == (IPv6Network("2001:db8:0:100:2::/80"), IPv6Network("2001:db8:0:100:3::/80"))
    inside = IPv6Address("2001:db8:0:100:2::7")
    assert usage(prefixes={first}).taken(inside) and not usage().taken(inside)
    assert not usage(prefixes={first}).prefix_free(first)
    assert not usage().prefix_free(IPv6Network("2001:db8:0:200::/80"))  # not in the subnet


def test_random_placement_stays_in_the_subnet_and_is_reproducible() -> None:
    one = Ipv6Allocator(placement=Placement.RANDOM, seed=7).pick_prefixes(usage(), 3)
    two = Ipv6Allocator(placement=Placement.RANDOM, seed=7).pick_prefixes(usage(), 3)
    assert one == two and all(p.subnet_of(SUBNET) and p.prefixlen == 80 for p in one)
    assert len(set(one)) == 3


def test_a_full_subnet_is_an_ec2_error() -> None:
    small = Ipv6Usage(cidr=IPv6Network("2001:db8::/125"), addresses=frozenset(), prefixes=frozenset())
    with pytest.raises(Ec2Error) as exc:
        Ipv6Allocator().pick_addresses(small, 4)  # 8 addresses, 5 reserved
    assert exc.value.code == "InsufficientFreeAddressesInSubnet"
    with pytest.raises(Ec2Error) as exc:
        Ipv6Allocator().pick_prefixes(small, 1)
    assert exc.value.code == "InsufficientCidrBlocks"
