"""Value types for the netlink seam: links, addresses, routes, rules, neighbours (IPv4 and IPv6)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

MAIN_TABLE = 254
LOCAL_TABLE = 255

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
IPInterface = IPv4Interface | IPv6Interface


class Scope(enum.IntEnum):
    """Route scopes (rtnetlink RT_SCOPE_*)."""

    UNIVERSE = 0
    LINK = 253
    HOST = 254


@dataclass(frozen=True, kw_only=True)
class Link:
    """A network interface as `ip link` shows it."""

    index: int
    name: str
    mac: str
    mtu: int
    up: bool
    kind: str = ""


@dataclass(frozen=True, kw_only=True)
class Address:
    """An address on a link: `ip addr add <interface> dev <ifname> [nodad]`.

    `nodad` (IPv6): usable at once, without duplicate address detection; not part of equality (the kernel
    does not report it back).
    """

    ifname: str
    interface: IPInterface
    nodad: bool = field(default=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class Route:
    """`ip route <dst> [via <gateway>] dev <ifname> scope <scope> table <table>`.

    IPv6 routes have no scope (the kernel reports universe for all of them), so one given is dropped.
    """

    dst: IPNetwork
    ifname: str
    gateway: IPAddress | None = None
    scope: Scope = Scope.UNIVERSE
    table: int = MAIN_TABLE

    def __post_init__(self) -> None:
        if self.dst.version == 6 and self.scope is not Scope.UNIVERSE:
            object.__setattr__(self, "scope", Scope.UNIVERSE)

    @property
    def family(self) -> int:
        return self.dst.version

    def __str__(self) -> str:
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst)
        via = f" via {self.gateway}" if self.gateway else ""
        scope = " scope link" if self.scope is Scope.LINK else ""
        table = "" if self.table == MAIN_TABLE else f" table {self.table}"
        return f"{dst}{via} dev {self.ifname}{scope}{table}"


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A policy routing rule:
    `ip [-6] rule add [from src] [to dst] [fwmark m/mask] [iif name] lookup table prio p`.

    `family` (4 or 6) follows `src`/`dst` when either is given; a rule with neither (a fwmark or iif rule) is
    IPv4 unless `family=6` says otherwise.
    """

    priority: int
    table: int
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    iif: str | None = None  # incoming interface (branch-ENI pods in strict mode)
    family: int = 4
    ip_proto: int | None = None  # `ipproto N` (IPv6 strict branch mode: ICMPv6 from EC2's router)

    def __post_init__(self) -> None:
        versions = {net.version for net in (self.src, self.dst) if net is not None}
        if len(versions) > 1:
            raise ValueError(f"rule mixes address families: from {self.src} to {self.dst}")
        if versions:
            object.__setattr__(self, "family", versions.pop())
        elif self.family not in (4, 6):
            raise ValueError(f"rule family must be 4 or 6, got {self.family}")

    def __str__(self) -> str:
        parts = [f"from {_short(self.src)}" if self.src else "from all"]
        if self.dst:
            parts.append(f"to {_short(self.dst)}")
        if self.iif:
            parts.append(f"iif {self.iif}")
        if self.fwmark is not None:
            mask = f"/{self.fwmask:#x}" if self.fwmask is not None else ""
            parts.append(f"fwmark {self.fwmark:#x}{mask}")
        if self.ip_proto is not None:
            parts.append(f"ipproto {self.ip_proto}")
        table = "main" if self.table == MAIN_TABLE else str(self.table)
        parts.append(f"lookup {table} prio {self.priority}")
        text = " ".join(parts)
        return f"{text} (IPv6)" if self.family == 6 and self.src is None and self.dst is None else text


@dataclass(frozen=True, kw_only=True)
class Neighbour:
    """A neighbour entry: `ip neigh replace <ip> lladdr <mac> dev <ifname> nud permanent`."""

    ifname: str
    ip: IPAddress
    mac: str
    permanent: bool = True


def _short(net: IPNetwork) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def host_network(ip: IPAddress) -> IPNetwork:
    """The host network of one address: /32 or /128."""
    if ip.version == 6:
        return IPv6Network((ip, 128))
    return IPv4Network((ip, 32))


def default_network(version: int) -> IPNetwork:
    """0.0.0.0/0 or ::/0."""
    return IPv6Network("::/0") if version == 6 else IPv4Network("0.0.0.0/0")


def is_global_unicast(ip: IPAddress) -> bool:
    """Go's `net.IP.IsGlobalUnicast` (what upstream checks a node's IPv6 address with): not unspecified,
    loopback, multicast or link-local. Unlike `ipaddress`'s `is_global`, documentation and unique-local
    addresses count."""
    return not (ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local)
