"""Value types for the netlink seam: links, addresses, routes, rules, neighbours (IPv4)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

MAIN_TABLE = 254
LOCAL_TABLE = 255


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
    """An IPv4 address on a link: `ip addr add <interface> dev <ifname>`."""

    ifname: str
    interface: IPv4Interface


@dataclass(frozen=True, kw_only=True)
class Route:
    """`ip route <dst> [via <gateway>] dev <ifname> scope <scope> table <table>`."""

    dst: IPv4Network
    ifname: str
    gateway: IPv4Address | None = None
    scope: Scope = Scope.UNIVERSE
    table: int = MAIN_TABLE

    def __str__(self) -> str:
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst)
        via = f" via {self.gateway}" if self.gateway else ""
        scope = " scope link" if self.scope is Scope.LINK else ""
        table = "" if self.table == MAIN_TABLE else f" table {self.table}"
        return f"{dst}{via} dev {self.ifname}{scope}{table}"


@dataclass(frozen=True, kw_only=True)
class Rule:
    """An IPv4 policy routing rule:
    `ip rule add [from src] [to dst] [fwmark m/mask] [iif name] lookup table prio p`."""

    priority: int
    table: int
    src: IPv4Network | None = None
    dst: IPv4Network | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    iif: str | None = None  # incoming interface (branch-ENI pods in strict mode)

    def __str__(self) -> str:
        parts = [f"from {_short(self.src)}" if self.src else "from all"]
        if self.dst:
            parts.append(f"to {_short(self.dst)}")
        if self.iif:
            parts.append(f"iif {self.iif}")
        if self.fwmark is not None:
            mask = f"/{self.fwmask:#x}" if self.fwmask is not None else ""
            parts.append(f"fwmark {self.fwmark:#x}{mask}")
        table = "main" if self.table == MAIN_TABLE else str(self.table)
        parts.append(f"lookup {table} prio {self.priority}")
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True)
class Neighbour:
    """A neighbour entry: `ip neigh replace <ip> lladdr <mac> dev <ifname> nud permanent`."""

    ifname: str
    ip: IPv4Address
    mac: str
    permanent: bool = True


def _short(net: IPv4Network) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def host_network(ip: IPv4Address) -> IPv4Network:
    """The /32 network of one address."""
    return IPv4Network(f"{ip}/32")
