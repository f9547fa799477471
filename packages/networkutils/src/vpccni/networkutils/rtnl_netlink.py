"""`Netlink` over one raw rtnetlink socket (`rtnl`): what `open_netlink()` returns.

Each method is one `ip` command and, mostly, one kernel round trip: links are addressed by name where the
kernel allows it (RTM_SETLINK, RTM_DELLINK), so bringing a veth up or deleting it needs no lookup first.
Same results and errors as `PyrouteNetlink`: deleting what is not there returns False, adding a rule that
exists is not an error, a missing link for an add raises `LookupError`, anything else the kernel refuses
raises `rtnl.NetlinkError`.
"""

from __future__ import annotations

import errno
import logging
import threading
from ipaddress import ip_interface
from pathlib import Path

from . import rtnl, softvlan
from .model import Address, IPNetwork, Link, Neighbour, Route, Rule, Scope
from .netlink import check_rule_selector
from .rtnl import (
    AF_UNSPEC,
    GONE,
    IFADDRMSG,
    NDMSG,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    RTMSG,
    NetlinkError,
    attr,
    attr_ip,
    attr_nest,
    attr_str,
    attr_u8,
    attr_u32,
    ifinfo,
)
from .sysctl import read_sysctl, write_sysctl

log = logging.getLogger(__name__)

IFNAMSIZ = 16
RT_SCOPE_NOWHERE = 255  # in a delete: any scope
_SCOPES = frozenset(int(s) for s in Scope)


_soft_vlan_warned = False


def _warn_soft_vlan_once() -> None:
    global _soft_vlan_warned
    if not _soft_vlan_warned:
        _soft_vlan_warned = True
        log.warning(
            "this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q): branch-ENI VLAN links are made "
            "of a veth pair and tc BPF programs that tag and untag the frames (vpccni.networkutils.softvlan)"
        )


def _valid_name(name: str) -> bool:
    """Whether a link could have this name (else the kernel answers EINVAL rather than "no such device")."""
    return bool(name) and len(name.encode()) <= IFNAMSIZ - 1


class RtnlNetlink:
    """`Netlink` for the namespace the socket was opened in; thread-safe (one request at a time).

    /proc/sys resolves in the namespace of the calling thread, so the sysctl methods must be called from a
    thread in the namespace this handle was opened in (ipamd's main namespace in production).
    """

    def __init__(self, sock: rtnl.RtnlSocket, *, proc_sys: Path = Path("/proc/sys")) -> None:
        self._sock = sock
        self._proc_sys = proc_sys
        self._lock = threading.Lock()

    @classmethod
    def open(cls) -> RtnlNetlink:
        """A handle in the calling thread's current network namespace."""
        return cls(rtnl.RtnlSocket.open())

    def __enter__(self) -> RtnlNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._sock.close()

    # -- links ----------------------------------------------------------------------------------------------
    def _get_link(self, name: str) -> Link | None:
        if not _valid_name(name):
            return None
        body = ifinfo() + attr_str(rtnl.IFLA_IFNAME, name) + rtnl.SKIP_STATS
        try:
            found = self._sock.get(rtnl.RTM_GETLINK, rtnl.RTM_NEWLINK, body)
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return None if found is None else rtnl.decode_link(*found)

    def _index(self, name: str) -> int:
        link = self._get_link(name)
        if link is None:
            raise LookupError(f"link {name} does not exist")
        return link.index

    def _links(self) -> list[Link]:
        body = ifinfo() + rtnl.SKIP_STATS
        return [rtnl.decode_link(*m) for m in self._sock.dump(rtnl.RTM_GETLINK, rtnl.RTM_NEWLINK, body)]

    def links(self) -> list[Link]:
        with self._lock:
            return self._links()

    def link(self, name: str) -> Link | None:
        with self._lock:
            return self._get_link(name)

    def add_veth(self, *, name: str, mac: str, mtu: int, peer_name: str, peer_netns_fd: int) -> None:
        peer = (
            ifinfo()
            + attr_str(rtnl.IFLA_IFNAME, peer_name)
            + attr_u32(rtnl.IFLA_NET_NS_FD, peer_netns_fd)
            + attr_u32(rtnl.IFLA_MTU, mtu)
        )
        info = attr_nest(
            rtnl.IFLA_LINKINFO,
            attr_str(rtnl.IFLA_INFO_KIND, "veth"),
            attr_nest(rtnl.IFLA_INFO_DATA, attr_nest(rtnl.VETH_INFO_PEER, peer)),
        )
        body = (
            ifinfo()
            + attr_str(rtnl.IFLA_IFNAME, name)
            + attr(rtnl.IFLA_ADDRESS, rtnl.mac_bytes(mac))
            + attr_u32(rtnl.IFLA_MTU, mtu)
            + info
        )
        with self._lock:
            self._sock.request(rtnl.RTM_NEWLINK, body, flags=NLM_F_CREATE | NLM_F_EXCL)

    def add_vlan(self, *, name: str, parent: str, vlan_id: int, mac: str, mtu: int | None = None) -> None:
        """A kernel VLAN link, or on a kernel without 802.1Q support the same link made with tc BPF
        (`softvlan`): real tagged frames on `parent` either way."""
        info = attr_nest(
            rtnl.IFLA_LINKINFO,
            attr_str(rtnl.IFLA_INFO_KIND, "vlan"),
            attr_nest(rtnl.IFLA_INFO_DATA, attr(rtnl.IFLA_VLAN_ID, rtnl.U16.pack(vlan_id))),
        )
        mtu_attr = attr_u32(rtnl.IFLA_MTU, mtu) if mtu is not None else b""
        with self._lock:
            parent_link = self._get_link(parent)
            if parent_link is None:
                raise LookupError(f"link {parent} does not exist")
            parent_index = parent_link.index
            named = ifinfo() + attr_str(rtnl.IFLA_IFNAME, name) + attr(rtnl.IFLA_ADDRESS, rtnl.mac_bytes(mac))
            body = named + attr_u32(rtnl.IFLA_LINK, parent_index) + mtu_attr + info
            try:
                self._sock.request(rtnl.RTM_NEWLINK, body, flags=NLM_F_CREATE | NLM_F_EXCL)
                return
            except NetlinkError as exc:
                if not softvlan.unsupported(exc):
                    raise
            _warn_soft_vlan_once()
            # A kernel VLAN link takes its parent's MTU unless told otherwise; a veth would take 1500.
            mtu_attr = attr_u32(rtnl.IFLA_MTU, mtu if mtu is not None else parent_link.mtu)
            peer = softvlan.peer_name(name)
            veth = attr_nest(
                rtnl.IFLA_LINKINFO,
                attr_str(rtnl.IFLA_INFO_KIND, "veth"),
                attr_nest(
                    rtnl.IFLA_INFO_DATA,
                    attr_nest(rtnl.VETH_INFO_PEER, ifinfo() + attr_str(rtnl.IFLA_IFNAME, peer) + mtu_attr),
                ),
            )
            self._sock.request(rtnl.RTM_NEWLINK, named + mtu_attr + veth, flags=NLM_F_CREATE | NLM_F_EXCL)
            try:
                peer_index = self._index(peer)
                self._sock.request(
                    rtnl.RTM_SETLINK,
                    ifinfo(flags=rtnl.IFF_UP, change=rtnl.IFF_UP) + attr_str(rtnl.IFLA_IFNAME, peer),
                )
                # The hidden end carries only the link's own frames: no IPv6 of its own on the wire.
                write_sysctl(self._proc_sys, f"net/ipv6/conf/{peer}/disable_ipv6", "1")
                softvlan.wire_soft_vlan(
                    self._sock, parent_index=parent_index, peer_index=peer_index, vlan_id=vlan_id
                )
            except BaseException:
                self._unless_gone(rtnl.RTM_DELLINK, ifinfo() + attr_str(rtnl.IFLA_IFNAME, name))
                raise

    def delete_link(self, name: str) -> bool:
        if not _valid_name(name):
            return False
        with self._lock:
            return self._unless_gone(rtnl.RTM_DELLINK, ifinfo() + attr_str(rtnl.IFLA_IFNAME, name))

    def set_link(self, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        if not _valid_name(name):
            raise LookupError(f"link {name} does not exist")
        with self._lock:
            if mtu is None and up is None:
                self._index(name)  # nothing to change; still an error when the link is missing
                return
            # Both zero leaves the flags alone (the kernel treats a zero change mask as "all flags").
            header = ifinfo(flags=rtnl.IFF_UP if up else 0, change=0 if up is None else rtnl.IFF_UP)
            body = header + attr_str(rtnl.IFLA_IFNAME, name)
            if mtu is not None:
                body += attr_u32(rtnl.IFLA_MTU, mtu)
            try:
                self._sock.request(rtnl.RTM_SETLINK, body)
            except NetlinkError as exc:
                if exc.errno == errno.ENODEV:
                    raise LookupError(f"link {name} does not exist") from None
                raise

    # -- addresses ------------------------------------------------------------------------------------------
    def addresses(self, ifname: str) -> list[Address]:
        with self._lock:
            link = self._get_link(ifname)
            if link is None:
                return []
            out = []
            body = IFADDRMSG.pack(AF_UNSPEC, 0, 0, 0, 0)
            for data, offset, end in self._sock.dump(rtnl.RTM_GETADDR, rtnl.RTM_NEWADDR, body):
                family, prefixlen, _, _, index = IFADDRMSG.unpack_from(data, offset)
                if rtnl.version_of(family) is None or index != link.index:
                    continue
                attrs = rtnl.parse_attrs(data, offset + IFADDRMSG.size, end)
                # IPv4 puts the interface's own address in IFA_LOCAL (IFA_ADDRESS is the peer's on
                # point-to-point links); IPv6 sends IFA_ADDRESS only.
                raw = attrs.get(rtnl.IFA_LOCAL) or attrs.get(rtnl.IFA_ADDRESS)
                if raw:
                    interface = ip_interface((rtnl.address_of(raw), prefixlen))
                    out.append(Address(ifname=ifname, interface=interface))
            return out

    @staticmethod
    def _address_body(address: Address, index: int) -> bytes:
        ip = address.interface.ip
        flags = rtnl.IFA_F_NODAD if address.nodad and ip.version == 6 else 0
        prefixlen = address.interface.network.prefixlen
        body = IFADDRMSG.pack(rtnl.family_of(ip.version), prefixlen, flags, 0, index)
        if ip.version == 4:
            body += attr_ip(rtnl.IFA_LOCAL, ip)
        return body + attr_ip(rtnl.IFA_ADDRESS, ip)

    def add_address(self, address: Address) -> None:
        with self._lock:
            body = self._address_body(address, self._index(address.ifname))
            self._sock.request(rtnl.RTM_NEWADDR, body, flags=NLM_F_CREATE | NLM_F_REPLACE)

    def delete_address(self, address: Address) -> bool:
        with self._lock:
            link = self._get_link(address.ifname)
            if link is None:
                return False
            return self._unless_gone(rtnl.RTM_DELADDR, self._address_body(address, link.index))

    # -- routes ---------------------------------------------------------------------------------------------
    def routes(self, table: int) -> list[Route]:
        with self._lock:
            names = {link.index: link.name for link in self._links()}
            out = []
            body = RTMSG.pack(AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)
            for data, offset, end in self._sock.dump(rtnl.RTM_GETROUTE, rtnl.RTM_NEWROUTE, body):
                family, dst_len, _, _, hdr_table, _, scope, kind, _ = RTMSG.unpack_from(data, offset)
                version = rtnl.version_of(family)
                if version is None or kind != rtnl.RTN_UNICAST:
                    continue  # unicast only (skip local/broadcast/multicast)
                attrs = rtnl.parse_attrs(data, offset + RTMSG.size, end)
                route_table = rtnl.u32(attrs.get(rtnl.RTA_TABLE)) or hdr_table
                if route_table != table:
                    continue
                gateway = attrs.get(rtnl.RTA_GATEWAY)
                out.append(
                    Route(
                        dst=rtnl.network_of(attrs.get(rtnl.RTA_DST), dst_len, version),
                        ifname=names.get(rtnl.u32(attrs.get(rtnl.RTA_OIF)), ""),
                        gateway=rtnl.address_of(gateway) if gateway else None,
                        scope=Scope(scope) if scope in _SCOPES else Scope.UNIVERSE,
                        table=route_table,
                    )
                )
            return out

    @staticmethod
    def _route_body(route: Route, index: int, *, delete: bool) -> bytes:
        table = route.table if route.table < 256 else rtnl.RT_TABLE_UNSPEC
        family = rtnl.family_of(route.family)
        if delete:
            # As `ip route del`: any protocol, scope and type, so routes others added (upstream: proto boot,
            # earlier releases: proto static) match too.
            header = RTMSG.pack(family, route.dst.prefixlen, 0, 0, table, 0, RT_SCOPE_NOWHERE, 0, 0)
        else:
            header = RTMSG.pack(
                family,
                route.dst.prefixlen,
                0,
                0,
                table,
                rtnl.RTPROT_BOOT,
                int(route.scope),
                rtnl.RTN_UNICAST,
                0,
            )
        body = header
        if route.dst.prefixlen:
            body += attr_ip(rtnl.RTA_DST, route.dst.network_address)
        body += attr_u32(rtnl.RTA_OIF, index)
        if route.gateway is not None:
            body += attr_ip(rtnl.RTA_GATEWAY, route.gateway)
        return body + attr_u32(rtnl.RTA_TABLE, route.table)

    def replace_route(self, route: Route) -> None:
        with self._lock:
            body = self._route_body(route, self._index(route.ifname), delete=False)
            self._sock.request(rtnl.RTM_NEWROUTE, body, flags=NLM_F_CREATE | NLM_F_REPLACE)

    def delete_route(self, route: Route) -> bool:
        with self._lock:
            link = self._get_link(route.ifname)
            if link is None:
                return False  # the link went away and took its routes with it
            return self._unless_gone(rtnl.RTM_DELROUTE, self._route_body(route, link.index, delete=True))

    # -- rules ----------------------------------------------------------------------------------------------
    def rules(self) -> list[Rule]:
        body = rtnl.FIB_RULE_HDR.pack(AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)
        with self._lock:
            decoded = [
                rtnl.decode_rule(*m) for m in self._sock.dump(rtnl.RTM_GETRULE, rtnl.RTM_NEWRULE, body)
            ]
        return [rule for rule in decoded if rule is not None]

    @staticmethod
    def _selector(
        *,
        family: int,
        priority: int,
        table: int,
        src: IPNetwork | None,
        dst: IPNetwork | None,
        action: int,
        iif: str | None = None,
    ) -> bytes:
        body = rtnl.FIB_RULE_HDR.pack(
            rtnl.family_of(family),
            dst.prefixlen if dst is not None else 0,
            src.prefixlen if src is not None else 0,
            0,
            table if table < 256 else rtnl.RT_TABLE_UNSPEC,
            0,
            0,
            action,
            0,
        ) + attr_u32(rtnl.FRA_PRIORITY, priority)
        if table:
            body += attr_u32(rtnl.FRA_TABLE, table)
        if src is not None:
            body += attr_ip(rtnl.FRA_SRC, src.network_address)
        if dst is not None:
            body += attr_ip(rtnl.FRA_DST, dst.network_address)
        if iif is not None:
            body += attr_str(rtnl.FRA_IIFNAME, iif)
        return body

    def _rule_body(self, rule: Rule) -> bytes:
        body = self._selector(
            family=rule.family,
            priority=rule.priority,
            table=rule.table,
            src=rule.src,
            dst=rule.dst,
            action=rtnl.FR_ACT_TO_TBL,
            iif=rule.iif,
        )
        if rule.fwmark is not None:
            body += attr_u32(rtnl.FRA_FWMARK, rule.fwmark)
        if rule.fwmask is not None:
            body += attr_u32(rtnl.FRA_FWMASK, rule.fwmask)
        if rule.ip_proto is not None:
            body += attr_u8(rtnl.FRA_IP_PROTO, rule.ip_proto)
        return body

    def add_rule(self, rule: Rule) -> None:
        with self._lock:
            try:
                self._sock.request(rtnl.RTM_NEWRULE, self._rule_body(rule), flags=NLM_F_CREATE | NLM_F_EXCL)
            except NetlinkError as exc:
                if exc.errno != errno.EEXIST:
                    raise

    def delete_rule(self, rule: Rule) -> bool:
        with self._lock:
            return self._unless_gone(rtnl.RTM_DELRULE, self._rule_body(rule))

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
        # No table (unless asked) and no action in the request: the kernel then matches rules of every table.
        body = self._selector(
            family=version, priority=priority, table=table or 0, src=src, dst=dst, action=0, iif=iif
        )
        deleted = 0
        with self._lock:
            while self._unless_gone(rtnl.RTM_DELRULE, body):
                deleted += 1
        return deleted

    # -- neighbours -----------------------------------------------------------------------------------------
    def neighbours(self, ifname: str) -> list[Neighbour]:
        with self._lock:
            link = self._get_link(ifname)
            if link is None:
                return []
            out = []
            body = NDMSG.pack(AF_UNSPEC, 0, 0, 0, 0, 0, 0)
            for data, offset, end in self._sock.dump(rtnl.RTM_GETNEIGH, rtnl.RTM_NEWNEIGH, body):
                family, _, _, index, state, _, _ = NDMSG.unpack_from(data, offset)
                if rtnl.version_of(family) is None or index != link.index:
                    continue
                attrs = rtnl.parse_attrs(data, offset + NDMSG.size, end)
                dst = attrs.get(rtnl.NDA_DST)
                if dst:
                    out.append(
                        Neighbour(
                            ifname=ifname,
                            ip=rtnl.address_of(dst),
                            mac=rtnl.mac_text(attrs.get(rtnl.NDA_LLADDR, b"")),
                            permanent=bool(state & rtnl.NUD_PERMANENT),
                        )
                    )
            return out

    def replace_neighbour(self, neighbour: Neighbour) -> None:
        state = rtnl.NUD_PERMANENT if neighbour.permanent else rtnl.NUD_REACHABLE
        family = rtnl.family_of(neighbour.ip.version)
        with self._lock:
            body = (
                NDMSG.pack(family, 0, 0, self._index(neighbour.ifname), state, 0, 0)
                + attr_ip(rtnl.NDA_DST, neighbour.ip)
                + attr(rtnl.NDA_LLADDR, rtnl.mac_bytes(neighbour.mac))
            )
            self._sock.request(rtnl.RTM_NEWNEIGH, body, flags=NLM_F_CREATE | NLM_F_REPLACE)

    # -- sysctls --------------------------------------------------------------------------------------------
    def write_sysctl(self, key: str, value: str) -> bool:
        return write_sysctl(self._proc_sys, key, value)

    def read_sysctl(self, key: str) -> str | None:
        return read_sysctl(self._proc_sys, key)

    def _unless_gone(self, kind: int, body: bytes) -> bool:
        """Send a delete; False when the kernel says the object was not there."""
        try:
            self._sock.request(kind, body)
        except NetlinkError as exc:
            if exc.errno in GONE:
                return False
            raise
        return True
