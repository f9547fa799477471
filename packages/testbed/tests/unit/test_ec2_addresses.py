from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.testbed.ec2.addresses import AddressAllocator, Placement, SubnetUsage, reserved_addresses
from vpccni.testbed.ec2.errors import Ec2Error

SUBNET = IPv4Network("10.0.1.0/26")  # 64 addresses: four /28 blocks


def usage(ips: list[str] = [], prefixes: list[str] = []) -> SubnetUsage:  # noqa: B006 - read-only defaults
    return SubnetUsage(
        cidr=SUBNET,
        ips=frozenset(IPv4Address(i) for i in ips),
        prefixes=frozenset(IPv4Network(p) for p in prefixes),
    )


def test_ec2_reserves_first_four_and_last_address() -> None:
    assert reserved_addresses(SUBNET) == {IPv4Address(f"10.0.1.{i}") for i in (0, 1, 2, 3, 63)}
    assert usage().available_count == 59


def test_lowest_placement_skips_reserved_and_used() -> None:
    picked = AddressAllocator().pick_ips(usage(["10.0.1.4"]), 2)
    assert picked == [IPv4Address("10.0.1.5"), IPv4Address("10.0.1.6")]


def test_prefixes_avoid_blocks_with_reserved_or_used_addresses_and_ips_avoid_prefixes() -> None:
    u = usage(["10.0.1.20"])
    # block .0/28 holds reserved addresses, .16/28 holds a used IP, .48/28 holds the broadcast address
    assert AddressAllocator().pick_prefixes(u, 1) == [IPv4Network("10.0.1.32/28")]
    with_prefix = usage(["10.0.1.20"], ["10.0.1.32/28"])
    assert with_prefix.available_count == 59 - 1 - 16
    ips = AddressAllocator().pick_ips(with_prefix, 40)
    assert not any(ip in IPv4Network("10.0.1.32/28") for ip in ips)


def test_fragmented_subnet_has_addresses_but_no_prefix() -> None:
    u = usage(["10.0.1.20", "10.0.1.40"])
    assert u.available_count > 16
    with pytest.raises(Ec2Error) as err:
        AddressAllocator().pick_prefixes(u, 1)
    assert err.value.code == "InsufficientCidrBlocks"


def test_exhausted_subnet_reports_insufficient_free_addresses() -> None:
    with pytest.raises(Ec2Error) as err:
        AddressAllocator().pick_ips(usage(), 60)
    assert err.value.code == "InsufficientFreeAddressesInSubnet"
    assert err.value.status == 400


def test_random_placement_is_reproducible_by_seed() -> None:
    a = AddressAllocator(placement=Placement.RANDOM, seed=7).pick_ips(usage(), 5)
    b = AddressAllocator(placement=Placement.RANDOM, seed=7).pick_ips(usage(), 5)
    assert a == b and len(set(a)) == 5 and not set(a) & reserved_addresses(SUBNET)
