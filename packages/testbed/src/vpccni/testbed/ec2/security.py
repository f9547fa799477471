"""The security-group state the VPC enforces, read from moto: each group's rules, each ENI's groups, and the
addresses that make an ENI a member of a group (for rules that reference a group).

As in EC2, a rule names a protocol (`-1` for all, `tcp`, `udp`, `icmp`, `icmpv6` (58) or a number), a port
range (ICMP and ICMPv6: type and code, -1 for any), and either a CIDR of one family (`IpRanges` are IPv4,
`Ipv6Ranges` IPv6) or a security group. A group reference covers both families: its members are every
private IPv4 address, IPv6 address and delegated prefix (IPv4 /28s, IPv6 /80s) of the ENIs that have it.
Prefix-list rules are not read (the testbed has no managed prefix lists): they match nothing here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vpccni.testbed.ec2.backend import MotoBackend

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# EC2 takes ICMPv6 as "58" or "icmpv6" (moto keeps what it was given); one name for the renderer.
_PROTOCOL_ALIASES = {"58": "icmpv6", "1": "icmp", "6": "tcp", "17": "udp", "all": "-1"}


@dataclass(frozen=True, kw_only=True)
class SgRule:
    protocol: str  # "-1", "tcp", "udp", "icmp", "icmpv6", or an IP protocol number
    from_port: int | None = None  # None: every port (protocol -1)
    to_port: int | None = None
    cidr: Network | None = None  # IPv4 (IpRanges) or IPv6 (Ipv6Ranges): the rule applies to that family
    group_id: str | None = None  # a referenced security group instead of a CIDR: both families


@dataclass(frozen=True, kw_only=True)
class GroupRules:
    ingress: tuple[SgRule, ...] = ()
    egress: tuple[SgRule, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SecurityState:
    """What the VPC needs to filter packets; ENIs it does not list are not filtered."""

    groups: Mapping[str, GroupRules] = field(default_factory=dict)
    eni_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    eni_addresses: Mapping[str, tuple[Network, ...]] = field(default_factory=dict)

    def members(self, group_id: str, *, version: int = 4) -> tuple[Network, ...]:
        """Every address of this family (4 or 6) of every ENI in the group, sorted."""
        found = {
            net
            for eni_id, groups in self.eni_groups.items()
            if group_id in groups
            for net in self.eni_addresses.get(eni_id, ())
            if net.version == version
        }
        return tuple(sorted(found, key=lambda net: (int(net.network_address), net.prefixlen)))


def read_security_state(
    backend: MotoBackend,
    prefixes_of: Callable[[str], list[ipaddress.IPv4Network]],
    ipv6_prefixes_of: Callable[[str], list[ipaddress.IPv6Network]],
) -> SecurityState:
    """The current state (call under the EC2 state lock)."""
    groups = {
        group.id: GroupRules(
            ingress=tuple(r for r in map(_rule, group.ingress_rules) if r is not None),
            egress=tuple(r for r in map(_rule, group.egress_rules) if r is not None),
        )
        for by_id in backend.raw.groups.values()
        for group in by_id.values()
    }
    eni_groups: dict[str, tuple[str, ...]] = {}
    eni_addresses: dict[str, tuple[Network, ...]] = {}
    for eni_id in list(backend.raw.enis):
        view = backend.eni_view(eni_id)
        eni_groups[eni_id] = tuple(view.security_group_ids)
        eni_addresses[eni_id] = (
            ipaddress.IPv4Network(view.primary_ip),
            *(ipaddress.IPv4Network(ip) for ip in view.secondary_ips),
            *prefixes_of(eni_id),
            *(ipaddress.IPv6Network(ip) for ip in view.ipv6_addresses),
            *ipv6_prefixes_of(eni_id),
        )
    return SecurityState(groups=groups, eni_groups=eni_groups, eni_addresses=eni_addresses)


def _rule(rule: Any) -> SgRule | None:
    """One moto rule (a single CIDR, or a group) as the datapath needs it; None for a prefix-list rule."""
    cidr: Network | None = None
    if "CidrIp" in rule.ip_range:
        cidr = ipaddress.IPv4Network(rule.ip_range["CidrIp"])
    elif "CidrIpv6" in rule.ip_range:
        cidr = ipaddress.IPv6Network(rule.ip_range["CidrIpv6"])
    elif not rule.source_group:
        return None
    raw = str(rule.ip_protocol or "-1").lower()
    protocol = _PROTOCOL_ALIASES.get(raw, raw)
    every = protocol == "-1"
    return SgRule(
        protocol=protocol,
        from_port=None if every or rule.from_port is None else int(rule.from_port),
        to_port=None if every or rule.to_port is None else int(rule.to_port),
        cidr=cidr,
        group_id=rule.source_group.get("GroupId") if cidr is None else None,
    )
