"""The security-group state the VPC enforces, read from moto: each group's rules, each ENI's groups, and the
addresses that make an ENI a member of a group (for rules that reference a group).

As in EC2, a rule names a protocol (`-1` for all, `tcp`, `udp`, `icmp` or a number), a port range (ICMP:
type and code, -1 for any), and either a CIDR or a security group, whose members are every private IP and
prefix of the ENIs that have it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vpccni.testbed.ec2.backend import MotoBackend

Network = ipaddress.IPv4Network


@dataclass(frozen=True, kw_only=True)
class SgRule:
    protocol: str  # "-1", "tcp", "udp", "icmp", or an IP protocol number
    from_port: int | None = None  # None: every port (protocol -1)
    to_port: int | None = None
    cidr: Network | None = None
    group_id: str | None = None  # a referenced security group instead of a CIDR


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

    def members(self, group_id: str) -> tuple[Network, ...]:
        """Every address of every ENI in the group, sorted."""
        found = {
            net
            for eni_id, groups in self.eni_groups.items()
            if group_id in groups
            for net in self.eni_addresses.get(eni_id, ())
        }
        return tuple(sorted(found))


def read_security_state(backend: MotoBackend, prefixes_of: Callable[[str], list[Network]]) -> SecurityState:
    """The current state (call under the EC2 state lock)."""
    groups = {
        group.id: GroupRules(
            ingress=tuple(_rule(r) for r in group.ingress_rules if _is_ipv4(r)),
            egress=tuple(_rule(r) for r in group.egress_rules if _is_ipv4(r)),
        )
        for by_id in backend.raw.groups.values()
        for group in by_id.values()
    }
    eni_groups: dict[str, tuple[str, ...]] = {}
    eni_addresses: dict[str, tuple[Network, ...]] = {}
    for eni_id in list(backend.raw.enis):
        view = backend.eni_view(eni_id)
        eni_groups[eni_id] = tuple(view.security_group_ids)
        eni_addresses[eni_id] = tuple(
            [Network(view.primary_ip), *(Network(ip) for ip in view.secondary_ips), *prefixes_of(eni_id)]
        )
    return SecurityState(groups=groups, eni_groups=eni_groups, eni_addresses=eni_addresses)


def _is_ipv4(rule: Any) -> bool:
    # IPv6 ranges and prefix lists do not apply to IPv4 packets.
    return bool(rule.source_group) or "CidrIp" in rule.ip_range


def _rule(rule: Any) -> SgRule:
    protocol = str(rule.ip_protocol or "-1")
    every = protocol == "-1"
    return SgRule(
        protocol=protocol,
        from_port=None if every or rule.from_port is None else int(rule.from_port),
        to_port=None if every or rule.to_port is None else int(rule.to_port),
        cidr=Network(rule.ip_range["CidrIp"]) if "CidrIp" in rule.ip_range else None,
        group_id=rule.source_group.get("GroupId") if rule.source_group else None,
    )
