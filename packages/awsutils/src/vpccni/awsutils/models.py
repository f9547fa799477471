"""Value types shared by the IMDS and EC2 layers."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network


@dataclass(frozen=True, kw_only=True)
class EniMetadata:
    """One attached ENI as IMDS (or, after merging, EC2) describes it."""

    eni_id: str
    mac: str
    device_number: int
    network_card: int
    subnet_id: str
    subnet_ipv4_cidr: IPv4Net | None
    subnet_ipv6_cidrs: tuple[IPv6Net, ...] = ()
    vpc_id: str = ""
    ipv4_addresses: tuple[IPv4, ...] = ()  # primary first
    ipv4_prefixes: tuple[IPv4Net, ...] = ()
    ipv6_addresses: tuple[IPv6, ...] = ()
    ipv6_prefixes: tuple[IPv6Net, ...] = ()

    @property
    def primary_ipv4(self) -> IPv4 | None:
        return self.ipv4_addresses[0] if self.ipv4_addresses else None

    @property
    def secondary_ipv4s(self) -> tuple[IPv4, ...]:
        return self.ipv4_addresses[1:]

    @property
    def is_efa_only(self) -> bool:
        """No IPv4 and no IPv6 in IMDS: upstream assumes an EFA-only interface (verified with EC2)."""
        return not self.ipv4_addresses and not self.ipv6_addresses


@dataclass(frozen=True, kw_only=True)
class Ec2Eni:
    """One ENI as ``DescribeNetworkInterfaces`` returns it."""

    eni_id: str
    mac: str
    status: str
    subnet_id: str
    vpc_id: str
    description: str
    interface_type: str  # "interface", "trunk", "efa", "efa-only", "branch"...
    device_index: int | None
    network_card: int
    attachment_id: str | None
    instance_id: str | None
    primary_ipv4: IPv4 | None
    ipv4_addresses: tuple[IPv4, ...]  # primary first
    ipv4_prefixes: tuple[IPv4Net, ...]
    ipv6_addresses: tuple[IPv6, ...]
    ipv6_prefixes: tuple[IPv6Net, ...]
    security_groups: tuple[str, ...]
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AttachedEni:
    """An attached ENI of this instance after merging IMDS with EC2 (EC2 wins where they disagree)."""

    metadata: EniMetadata
    interface_type: str
    tags: Mapping[str, str]
    is_primary: bool

    @property
    def eni_id(self) -> str:
        return self.metadata.eni_id


@dataclass(frozen=True, kw_only=True)
class AllocatedEni:
    """A new ENI created, attached and set to delete on termination."""

    eni_id: str
    mac: str
    subnet_id: str
    device_index: int
    network_card: int
    attachment_id: str
    primary_ipv4: IPv4 | None
    secondary_ipv4s: tuple[IPv4, ...]
    ipv4_prefixes: tuple[IPv4Net, ...]


@dataclass(frozen=True, kw_only=True)
class Subnet:
    subnet_id: str
    vpc_id: str
    availability_zone: str
    cidr: IPv4Net
    available_ips: int
    tags: Mapping[str, str] = field(default_factory=dict)
