"""Stateful in-memory fakes of the netlink, iptables and nft seams, for unit tests (never used by products).

They keep state the way the kernel does where tests depend on it: deleting a link removes its peer, its
addresses, routes and neighbours; an address with a prefix adds the connected route; rules reject duplicates.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import threading
from collections.abc import Callable
from ipaddress import ip_interface
from typing import TypeVar

from .iptables import BUILTIN_CHAINS, IptablesMode, SavedTable
from .model import MAIN_TABLE, Address, IPNetwork, Link, Neighbour, Route, Rule, Scope
from .netlink import Netlink, check_rule_selector

T = TypeVar("T")


class FakeNetwork:
    """A set of fake namespaces addressed by fd (as the real code addresses pod namespaces)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._by_fd: dict[int, FakeNamespace] = {}
        self._next_fd = 100
        self._next_index = 1

    def add_namespace(self, name: str) -> tuple[int, FakeNamespace]:
        """A new namespace and the fd that refers to it."""
        with self.lock:
            ns = FakeNamespace(self, name)
            fd = self._next_fd
            self._next_fd += 1
            self._by_fd[fd] = ns
            return fd, ns

    def delete_namespace(self, fd: int) -> None:
        """Like the last reference to a netns going away: its veths' peers vanish too."""
        with self.lock:
            ns = self._by_fd.pop(fd)
            for link in list(ns.links()):
                ns.delete_link(link.name)

    def namespace(self, fd: int) -> FakeNamespace:
        with self.lock:
            if fd not in self._by_fd:
                raise OSError(errno.EBADF, f"fd {fd} is not a network namespace")
            return self._by_fd[fd]

    def next_index(self) -> int:
        with self.lock:
            self._next_index += 1
            return self._next_index


class FakeNetnsNetlink:
    """`NetnsNetlink` over a `FakeNetwork`."""

    def __init__(self, network: FakeNetwork) -> None:
        self._network = network

    def run(self, netns_fd: int, fn: Callable[[Netlink], T]) -> T:
        return fn(self._network.namespace(netns_fd))


class FakeNamespace:
    """`Netlink` for one fake namespace."""

    def __init__(self, network: FakeNetwork, name: str) -> None:
        self.name = name
        self._network = network
        self._links: dict[str, Link] = {}
        self._peers: dict[str, tuple[FakeNamespace, str]] = {}
        self._addresses: list[Address] = []
        self._routes: list[Route] = []
        self._rules: list[Rule] = [
            Rule(priority=0, table=255),
            Rule(priority=32766, table=MAIN_TABLE),
            Rule(priority=32767, table=253),
        ]
        self._neighbours: list[Neighbour] = []
        self._vlans: dict[str, tuple[str, int]] = {}  # VLAN link -> (parent link, VLAN id)
        self.sysctls: dict[str, str] = {
            "net/ipv4/ip_forward": "0",
            "net/ipv6/conf/all/forwarding": "0",
            "net/ipv6/conf/all/disable_ipv6": "0",
        }
        self.link_appears_after: dict[str, int] = {}  # mac -> number of links() calls before it shows

    # links
    def add_link(
        self, name: str, *, mac: str, mtu: int = 1500, kind: str = "dummy", up: bool = False
    ) -> Link:
        """Test helper: `ip link add NAME address MAC type dummy`."""
        with self._network.lock:
            if name in self._links:
                raise OSError(errno.EEXIST, f"link {name} exists")
            link = Link(
                index=self._network.next_index(), name=name, mac=mac.lower(), mtu=mtu, up=up, kind=kind
            )
            self._links[name] = link
            for key, value in (
                ("accept_ra", "1"),
                ("accept_redirects", "1"),
                ("forwarding", "0"),
                ("accept_dad", "1"),
                ("disable_ipv6", "0"),
            ):
                self.sysctls[f"net/ipv6/conf/{name}/{key}"] = value
            self.sysctls[f"net/ipv4/conf/{name}/rp_filter"] = "1"
            return link

    def links(self) -> list[Link]:
        with self._network.lock:
            visible = []
            for link in self._links.values():
                pending = self.link_appears_after.get(link.mac, 0)
                if pending > 0:
                    self.link_appears_after[link.mac] = pending - 1
                    continue
                visible.append(link)
            return visible

    def link(self, name: str) -> Link | None:
        with self._network.lock:
            return self._links.get(name)

    def add_veth(self, *, name: str, mac: str, mtu: int, peer_name: str, peer_netns_fd: int) -> None:
        with self._network.lock:
            peer_ns = self._network.namespace(peer_netns_fd)
            if peer_ns.link(peer_name) is not None:
                raise OSError(errno.EEXIST, f"{peer_name} exists in the peer namespace")
            self.add_link(name, mac=mac, mtu=mtu, kind="veth")
            peer_mac = "02:00:00:" + ":".join(
                f"{b:02x}" for b in self._network.next_index().to_bytes(3, "big")
            )
            peer_ns.add_link(peer_name, mac=peer_mac, mtu=mtu, kind="veth")
            self._peers[name] = (peer_ns, peer_name)
            peer_ns._peers[peer_name] = (self, name)

    def add_vlan(self, *, name: str, parent: str, vlan_id: int, mac: str, mtu: int | None = None) -> None:
        with self._network.lock:
            link = self._links.get(parent)
            if link is None:
                raise LookupError(f"link {parent} does not exist")
            if any(p == parent and v == vlan_id for p, v in self._vlans.values()):
                raise OSError(errno.EEXIST, f"{parent} already has a VLAN {vlan_id} link")
            self.add_link(name, mac=mac, mtu=mtu or link.mtu, kind="vlan")
            self._vlans[name] = (parent, vlan_id)

    def vlan_of(self, name: str) -> tuple[str, int] | None:
        """Test helper: (parent link, VLAN id) of a VLAN link."""
        with self._network.lock:
            return self._vlans.get(name)

    def delete_link(self, name: str) -> bool:
        with self._network.lock:
            if self._links.pop(name, None) is None:
                return False
            self._vlans.pop(name, None)
            for child in [c for c, (p, _) in self._vlans.items() if p == name]:
                self.delete_link(child)  # as the kernel: a VLAN link goes with its parent
            self._addresses = [a for a in self._addresses if a.ifname != name]
            self._routes = [r for r in self._routes if r.ifname != name]
            self._neighbours = [n for n in self._neighbours if n.ifname != name]
            self.sysctls = {k: v for k, v in self.sysctls.items() if f"/conf/{name}/" not in k}
            peer = self._peers.pop(name, None)
            if peer is not None:
                peer_ns, peer_name = peer
                peer_ns._peers.pop(peer_name, None)
                peer_ns.delete_link(peer_name)
            return True

    def set_link(self, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        with self._network.lock:
            link = self._require(name)
            changes: dict[str, object] = {}
            if mtu is not None:
                changes["mtu"] = mtu
            if up is not None:
                changes["up"] = up
            self._links[name] = dataclasses.replace(link, **changes)  # type: ignore[arg-type]

    def _require(self, name: str) -> Link:
        link = self._links.get(name)
        if link is None:
            raise OSError(errno.ENODEV, f"link {name} does not exist")
        return link

    # addresses
    def addresses(self, ifname: str) -> list[Address]:
        with self._network.lock:
            return [a for a in self._addresses if a.ifname == ifname]

    def add_address(self, address: Address) -> None:
        with self._network.lock:
            self._require(address.ifname)
            if address not in self._addresses:
                self._addresses.append(address)
            net = address.interface.network
            if net.prefixlen < net.max_prefixlen:
                connected = Route(dst=net, ifname=address.ifname, scope=Scope.LINK, table=MAIN_TABLE)
                if connected not in self._routes:
                    self._routes.append(connected)

    def delete_address(self, address: Address) -> bool:
        with self._network.lock:
            if address not in self._addresses:
                return False
            self._addresses.remove(address)
            net = address.interface.network
            self._routes = [r for r in self._routes if not (r.dst == net and r.ifname == address.ifname)]
            return True

    # routes
    def routes(self, table: int) -> list[Route]:
        with self._network.lock:
            return [r for r in self._routes if r.table == table]

    def replace_route(self, route: Route) -> None:
        with self._network.lock:
            self._require(route.ifname)
            if route.gateway is not None and not self._reachable(route):
                raise OSError(errno.ENETUNREACH, f"gateway {route.gateway} unreachable")
            self._routes = [r for r in self._routes if not (r.table == route.table and r.dst == route.dst)]
            self._routes.append(route)

    def _reachable(self, route: Route) -> bool:
        gw = route.gateway
        if gw is not None and gw.version == 6 and gw.is_link_local:
            return True  # an IPv6 link-local next hop is on the link by definition
        return any(
            r.ifname == route.ifname
            and gw is not None
            and gw in r.dst
            and (r.scope is Scope.LINK or r.family == 6)
            for r in self._routes
        )

    def delete_route(self, route: Route) -> bool:
        with self._network.lock:
            before = len(self._routes)
            self._routes = [
                r
                for r in self._routes
                if not (r.table == route.table and r.dst == route.dst and r.ifname == route.ifname)
            ]
            return len(self._routes) != before

    # rules
    def rules(self) -> list[Rule]:
        with self._network.lock:
            return sorted(self._rules, key=lambda r: r.priority)

    def add_rule(self, rule: Rule) -> None:
        with self._network.lock:
            if rule not in self._rules:
                self._rules.append(rule)

    def delete_rule(self, rule: Rule) -> bool:
        with self._network.lock:
            if rule not in self._rules:
                return False
            self._rules.remove(rule)
            return True

    def delete_rules(
        self,
        *,
        priority: int,
        src: IPNetwork | None = None,
        dst: IPNetwork | None = None,
        table: int | None = None,
        iif: str | None = None,
        family: int = 4,
    ) -> int:
        version = check_rule_selector(src=src, dst=dst, table=table, iif=iif, family=family)
        with self._network.lock:
            # As the kernel: a selector left out matches anything.
            gone = [
                r
                for r in self._rules
                if r.priority == priority
                and r.family == version
                and (src is None or r.src == src)
                and (dst is None or r.dst == dst)
                and (not table or r.table == table)
                and (iif is None or r.iif == iif)
            ]
            self._rules = [r for r in self._rules if r not in gone]
            return len(gone)

    # neighbours
    def neighbours(self, ifname: str) -> list[Neighbour]:
        with self._network.lock:
            return [n for n in self._neighbours if n.ifname == ifname]

    def replace_neighbour(self, neighbour: Neighbour) -> None:
        with self._network.lock:
            self._require(neighbour.ifname)
            self._neighbours = [
                n for n in self._neighbours if not (n.ifname == neighbour.ifname and n.ip == neighbour.ip)
            ]
            self._neighbours.append(neighbour)

    # sysctls
    def write_sysctl(self, key: str, value: str) -> bool:
        with self._network.lock:
            if key not in self.sysctls:
                return False
            self.sysctls[key] = value
            return True

    def read_sysctl(self, key: str) -> str | None:
        with self._network.lock:
            return self.sysctls.get(key)

    def close(self) -> None:
        pass

    def add_ip(self, ifname: str, cidr: str) -> None:
        """Test helper: `ip addr add CIDR dev IFNAME`."""
        self.add_address(Address(ifname=ifname, interface=ip_interface(cidr)))


class FakeIptables:
    """`Iptables` kept in memory, speaking the same save/restore text as the real tools.

    A restore is applied to a copy and swapped in only when every line succeeds (atomic, like the real one).
    """

    def __init__(self, mode: IptablesMode = IptablesMode.NFT) -> None:
        self._mode = mode
        self.tables: dict[str, SavedTable] = {
            table: {chain: [] for chain in chains} for table, chains in BUILTIN_CHAINS.items()
        }
        self.restores: list[str] = []

    def mode(self) -> IptablesMode:
        return self._mode

    def save(self, table: str) -> str:
        chains = self.tables[table]
        builtin = BUILTIN_CHAINS[table]
        lines = [f"*{table}"]
        lines += [f":{c} ACCEPT [0:0]" for c in builtin]
        lines += [f":{c} - [0:0]" for c in sorted(chains) if c not in builtin]
        for chain in [*builtin, *sorted(c for c in chains if c not in builtin)]:
            lines += [f"-A {chain} {rule}" for rule in chains[chain]]
        return "\n".join([*lines, "COMMIT", ""])

    def restore(self, text: str) -> None:
        self.restores.append(text)
        staged = copy.deepcopy(self.tables)
        table: SavedTable | None = None
        name = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("*"):
                name = line[1:]
                table = staged[name]
                continue
            if line == "COMMIT":
                table = None
                continue
            if table is None:
                raise ValueError(f"iptables-restore: line outside a table: {line!r}")
            if line.startswith(":"):
                chain = line[1:].split(" ", 1)[0]
                table[chain] = []  # --noflush: declaring a chain creates or flushes it
                continue
            op, chain, *rest = line.split(" ", 2)
            spec = rest[0] if rest else ""
            if chain not in table:
                raise ValueError(f"iptables-restore: no chain {chain} in {name}: {line!r}")
            if op == "-A":
                self._check_target(table, spec, line)
                table[chain].append(spec)
            elif op == "-I":
                position, _, rule = spec.partition(" ")
                if not position.isdigit():  # `-I chain rule`: at the head
                    position, rule = "1", spec
                self._check_target(table, rule, line)
                table[chain].insert(int(position) - 1, rule)
            elif op == "-D":
                if spec not in table[chain]:
                    raise ValueError(f"iptables-restore: no such rule: {line!r}")
                table[chain].remove(spec)
            elif op == "-F":
                table[chain] = []
            elif op == "-X":
                if table[chain] or any(_target(r) == chain for rules in table.values() for r in rules):
                    raise ValueError(f"iptables-restore: chain {chain} not empty or still referenced")
                del table[chain]
            else:
                raise ValueError(f"iptables-restore: unsupported line {line!r}")
        self.tables = staged

    @staticmethod
    def _check_target(table: SavedTable, spec: str, line: str) -> None:
        target = _target(spec)
        if target is not None and target.startswith("AWS-") and target not in table:
            raise ValueError(f"iptables-restore: jump to missing chain: {line!r}")

    def rules(self, table: str, chain: str) -> list[str]:
        """Test helper: the rule specs of one chain."""
        return list(self.tables[table].get(chain, []))


def _target(spec: str) -> str | None:
    padded = f" {spec} "
    if " -j " not in padded:
        return None
    return padded.split(" -j ", 1)[1].split(" ", 1)[0]


class FakeNft:
    """`Nft` kept in memory: tables map to the body last written."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], str] = {}
        self.writes = 0

    def list_table(self, family: str, name: str) -> str | None:
        body = self.tables.get((family, name))
        return None if body is None else f"table {family} {name} {{\n{body}}}\n"

    def replace_table(self, family: str, name: str, body: str) -> None:
        self.writes += 1
        self.tables[(family, name)] = body

    def delete_table(self, family: str, name: str) -> bool:
        return self.tables.pop((family, name), None) is not None
