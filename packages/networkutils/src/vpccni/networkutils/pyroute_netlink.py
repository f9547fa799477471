"""`Netlink` through pyroute2: an independent implementation the netns tests compare the raw adapter with.

Product code never imports this module (pyroute2 costs ~10 MiB of resident memory and 0.3-0.8 ms a request).
"""

from __future__ import annotations

import errno
import logging
import threading
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .model import Address, IPNetwork, Link, Neighbour, Route, Rule, Scope
from .netlink import check_rule_selector
from .rtnl import GONE, IFA_F_NODAD, family_of
from .sysctl import read_sysctl, write_sysctl

log = logging.getLogger(__name__)

AF_INET, AF_INET6 = 2, 10
FAMILIES = (AF_INET, AF_INET6)
NUD_PERMANENT = 0x80
IFF_UP = 0x1
IFNAMSIZ = 16


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


class PyrouteNetlink:
    """`Netlink` over one pyroute2 `IPRoute` socket; safe to share between threads (one lock per socket).

    /proc/sys is resolved in the namespace of the calling thread, so the sysctl methods must be called from a
    thread in the namespace this handle was opened in (ipamd's main namespace in production).
    """

    def __init__(self, ipr: IPRoute, *, proc_sys: Path = Path("/proc/sys")) -> None:
        self._ipr = ipr
        self._proc_sys = proc_sys
        self._lock = threading.RLock()

    def __enter__(self) -> PyrouteNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._ipr.close()

    def _find(self, name: str) -> Link | None:
        """The kernel's RTM_GETLINK for one name (pyroute2's `link_lookup` dumps and filters every link)."""
        if not name or len(name.encode()) > IFNAMSIZ - 1:
            return None  # no link can have this name; the kernel would answer EINVAL
        try:
            found = self._ipr.link("get", ifname=name)
        except NetlinkError as exc:
            if exc.code in GONE:
                return None
            raise
        return self._to_link(found[0]) if found else None

    def _lookup(self, name: str) -> int | None:
        link = self._find(name)
        return None if link is None else link.index

    def _index(self, name: str) -> int:
        found = self._lookup(name)
        if found is None:
            raise LookupError(f"link {name} does not exist")
        return found

    def _names(self) -> dict[int, str]:
        return {int(msg["index"]): _attr(msg, "IFLA_IFNAME") for msg in self._ipr.get_links()}

    def links(self) -> list[Link]:
        with self._lock:
            return [self._to_link(msg) for msg in self._ipr.get_links()]

    @staticmethod
    def _to_link(msg: Any) -> Link:
        info = _attr(msg, "IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else ""
        return Link(
            index=int(msg["index"]),
            name=_attr(msg, "IFLA_IFNAME"),
            mac=(_attr(msg, "IFLA_ADDRESS") or "").lower(),
            mtu=int(_attr(msg, "IFLA_MTU") or 0),
            up=bool(msg["flags"] & IFF_UP),
            kind=kind or "",
        )

    def link(self, name: str) -> Link | None:
        with self._lock:
            return self._find(name)

    def add_veth(self, *, name: str, mac: str, mtu: int, peer_name: str, peer_netns_fd: int) -> None:
        with self._lock:
            self._ipr.link(
                "add",
                ifname=name,
                kind="veth",
                address=mac,
                mtu=mtu,
                peer={"ifname": peer_name, "net_ns_fd": peer_netns_fd, "mtu": mtu},
            )

    def add_vlan(self, *, name: str, parent: str, vlan_id: int, mac: str, mtu: int | None = None) -> None:
        with self._lock:
            args: dict[str, Any] = {
                "ifname": name,
                "kind": "vlan",
                "link": self._index(parent),
                "vlan_id": vlan_id,
                "address": mac,
            }
            if mtu is not None:
                args["mtu"] = mtu
            self._ipr.link("add", **args)

    def delete_link(self, name: str) -> bool:
        with self._lock:
            index = self._lookup(name)
            if index is None:
                return False
            return self._ignore_gone(lambda: self._ipr.link("del", index=index))

    def set_link(self, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        with self._lock:
            index = self._index(name)
            if mtu is not None:
                self._ipr.link("set", index=index, mtu=mtu)
            if up is not None:
                self._ipr.link("set", index=index, state="up" if up else "down")

    def addresses(self, ifname: str) -> list[Address]:
        with self._lock:
            index = self._lookup(ifname)
            if index is None:
                return []
            return [
                Address(
                    ifname=ifname,
                    interface=ip_interface(
                        f"{_attr(m, 'IFA_LOCAL') or _attr(m, 'IFA_ADDRESS')}/{m['prefixlen']}"
                    ),
                )
                for family in FAMILIES
                for m in self._ipr.get_addr(family=family, index=index)
            ]

    def add_address(self, address: Address) -> None:
        with self._lock:
            nodad = address.nodad and address.interface.version == 6
            self._ipr.addr(
                "replace",
                index=self._index(address.ifname),
                address=str(address.interface.ip),
                prefixlen=address.interface.network.prefixlen,
                **({"flags": IFA_F_NODAD} if nodad else {}),
            )

    def delete_address(self, address: Address) -> bool:
        with self._lock:
            index = self._lookup(address.ifname)
            if index is None:
                return False
            return self._ignore_gone(
                lambda: self._ipr.addr(
                    "del",
                    index=index,
                    address=str(address.interface.ip),
                    prefixlen=address.interface.network.prefixlen,
                )
            )

    def routes(self, table: int) -> list[Route]:
        with self._lock:
            names = self._names()
            out = []
            for msg in (m for f in FAMILIES for m in self._ipr.get_routes(family=f, table=table)):
                if msg["type"] != 1:  # unicast only (skip local/broadcast/multicast)
                    continue
                dst = _attr(msg, "RTA_DST") or ("::" if msg["family"] == AF_INET6 else "0.0.0.0")
                gateway = _attr(msg, "RTA_GATEWAY")
                out.append(
                    Route(
                        dst=ip_network(f"{dst}/{msg['dst_len']}"),
                        ifname=names.get(int(_attr(msg, "RTA_OIF") or 0), ""),
                        gateway=ip_address(gateway) if gateway else None,
                        scope=Scope(msg["scope"]) if msg["scope"] in set(Scope) else Scope.UNIVERSE,
                        table=int(_attr(msg, "RTA_TABLE") or msg["table"]),
                    )
                )
            return out

    def _route_args(self, route: Route, index: int | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dst": str(route.dst),
            "oif": self._index(route.ifname) if index is None else index,
            "table": route.table,
            "scope": int(route.scope),
        }
        if route.gateway is not None:
            args["gateway"] = str(route.gateway)
        return args

    def replace_route(self, route: Route) -> None:
        with self._lock:
            self._ipr.route("replace", **self._route_args(route))

    def delete_route(self, route: Route) -> bool:
        with self._lock:
            index = self._lookup(route.ifname)
            if index is None:
                # The link went away and took its routes with it.
                return False
            args = self._route_args(route, index)
            return self._ignore_gone(lambda: self._ipr.route("del", **args))

    def rules(self) -> list[Rule]:
        with self._lock:
            out = []
            for msg in (m for f in FAMILIES for m in self._ipr.get_rules(family=f)):
                src, dst = _attr(msg, "FRA_SRC"), _attr(msg, "FRA_DST")
                out.append(
                    Rule(
                        priority=int(_attr(msg, "FRA_PRIORITY") or 0),
                        table=int(_attr(msg, "FRA_TABLE") or msg["table"]),
                        src=ip_network(f"{src}/{msg['src_len']}") if src else None,
                        dst=ip_network(f"{dst}/{msg['dst_len']}") if dst else None,
                        fwmark=_attr(msg, "FRA_FWMARK"),
                        fwmask=_attr(msg, "FRA_FWMASK"),
                        iif=_attr(msg, "FRA_IIFNAME"),
                        family=6 if msg["family"] == AF_INET6 else 4,
                        ip_proto=_attr(msg, "FRA_IP_PROTO"),
                    )
                )
            return out

    @staticmethod
    def _rule_args(rule: Rule) -> dict[str, Any]:
        args: dict[str, Any] = {
            "table": rule.table,
            "priority": rule.priority,
            "family": family_of(rule.family),
        }
        if rule.src is not None:
            args.update(src=str(rule.src.network_address), src_len=rule.src.prefixlen)
        if rule.dst is not None:
            args.update(dst=str(rule.dst.network_address), dst_len=rule.dst.prefixlen)
        if rule.fwmark is not None:
            args["fwmark"] = rule.fwmark
        if rule.fwmask is not None:
            args["fwmask"] = rule.fwmask
        if rule.iif is not None:
            args["iifname"] = rule.iif
        if rule.ip_proto is not None:
            args["ip_proto"] = rule.ip_proto
        return args

    def add_rule(self, rule: Rule) -> None:
        with self._lock:
            try:
                self._ipr.rule("add", **self._rule_args(rule))
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise

    def delete_rule(self, rule: Rule) -> bool:
        with self._lock:
            args = self._rule_args(rule)
            return self._ignore_gone(lambda: self._ipr.rule("del", **args))

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
        family = family_of(check_rule_selector(src=src, dst=dst, table=table, iif=iif, family=family))
        # No table (and no FRA_TABLE) in the request: the kernel then matches rules of every table.
        args: dict[str, Any] = {"priority": priority, "family": family}
        if src is not None:
            args.update(src=str(src.network_address), src_len=src.prefixlen)
        if dst is not None:
            args.update(dst=str(dst.network_address), dst_len=dst.prefixlen)
        if table:
            args["table"] = table
        if iif is not None:
            args["iifname"] = iif
        deleted = 0
        with self._lock:
            while self._ignore_gone(lambda: self._ipr.rule("del", **args)):
                deleted += 1
        return deleted

    def neighbours(self, ifname: str) -> list[Neighbour]:
        with self._lock:
            index = self._lookup(ifname)
            if index is None:
                return []
            return [
                Neighbour(
                    ifname=ifname,
                    ip=ip_address(_attr(m, "NDA_DST")),
                    mac=(_attr(m, "NDA_LLADDR") or "").lower(),
                    permanent=bool(m["state"] & NUD_PERMANENT),
                )
                for family in FAMILIES
                for m in self._ipr.get_neighbours(family=family, ifindex=index)
                if _attr(m, "NDA_DST")
            ]

    def replace_neighbour(self, neighbour: Neighbour) -> None:
        with self._lock:
            self._ipr.neigh(
                "replace",
                dst=str(neighbour.ip),
                lladdr=neighbour.mac,
                ifindex=self._index(neighbour.ifname),
                state=NUD_PERMANENT if neighbour.permanent else 0x02,
            )

    def write_sysctl(self, key: str, value: str) -> bool:
        return write_sysctl(self._proc_sys, key, value)

    def read_sysctl(self, key: str) -> str | None:
        return read_sysctl(self._proc_sys, key)

    @staticmethod
    def _ignore_gone(call: Any) -> bool:
        try:
            call()
        except NetlinkError as exc:
            if exc.code in GONE:
                return False
            raise
        return True
