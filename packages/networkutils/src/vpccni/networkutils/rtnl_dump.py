"""rtnetlink dumps of links and IPv4 rules, and link lookups by name, straight off a raw netlink socket.

pyroute2 decodes every attribute of every message into objects; a node with a few hundred pods has a few
hundred veths and twice as many rules, and each such dump took tens of milliseconds (ipamd lists them when
it wires a pod, sets up an ENI and restores pods at start). This decodes only the fields `model` needs.
The socket must be opened in the namespace it is to list (netlink is bound to its creator's namespace).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

from .model import Link, Rule

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWRULE, RTM_GETRULE = 32, 34
AF_UNSPEC, AF_INET = 0, 2

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_EXT_MASK = 1, 3, 4, 18, 29
IFLA_INFO_KIND = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # the per-link counters are most of a link message and never read here
FRA_DST, FRA_SRC, FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 1, 2, 6, 10, 15, 16
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action, flags
_RTATTR = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = data[offset + _RTATTR.size : offset + length]  # without NLA_F_NESTED/ORDER
        offset += _align(length)
    return out


def _string(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


_SKIP_STATS = _RTATTR.pack(8, IFLA_EXT_MASK) + _U32.pack(RTEXT_FILTER_SKIP_STATS)


def _link(data: bytes, offset: int, end: int) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, offset)
    attrs = _attrs(data, offset + _IFINFOMSG.size, end)
    info = attrs.get(IFLA_LINKINFO)
    kind = _attrs(info, 0, len(info)).get(IFLA_INFO_KIND) if info else None
    mtu = attrs.get(IFLA_MTU)
    return Link(
        index=index,
        name=_string(attrs.get(IFLA_IFNAME, b"")),
        mac=":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b"")),
        mtu=_U32.unpack(mtu)[0] if mtu else 0,
        up=bool(flags & IFF_UP),
        kind=_string(kind) if kind else "",
    )


class RtnlDumper:
    """Link and rule dumps over one raw NETLINK_ROUTE socket; the caller serialises calls."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = itertools.count(1)

    @classmethod
    def open(cls) -> RtnlDumper:
        """A socket in the calling thread's current network namespace."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        sock.bind((0, 0))
        return cls(sock)

    def close(self) -> None:
        self._sock.close()

    def links(self) -> list[Link]:
        """`ip link show`, as `PyrouteNetlink` reports links."""
        body = _IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + _SKIP_STATS
        return [_link(*msg) for msg in self._exchange(RTM_GETLINK, RTM_NEWLINK, body, dump=True)]

    def link(self, name: str) -> Link | None:
        """`ip link show dev NAME` with one RTM_GETLINK (the kernel looks the name up); None if absent."""
        encoded = name.encode() + b"\0"
        attr = _RTATTR.pack(_RTATTR.size + len(encoded), IFLA_IFNAME) + encoded
        body = _IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + attr + b"\0" * (_align(len(attr)) - len(attr))
        try:
            found = [_link(*msg) for msg in self._exchange(RTM_GETLINK, RTM_NEWLINK, body + _SKIP_STATS)]
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return found[0] if found else None

    def rules(self) -> list[Rule]:
        """`ip -4 rule show`, as `PyrouteNetlink` reports rules."""
        body = _FIB_RULE_HDR.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        out = []
        for data, offset, end in self._exchange(RTM_GETRULE, RTM_NEWRULE, body, dump=True):
            family, dst_len, src_len, _, table, _, _, _, _ = _FIB_RULE_HDR.unpack_from(data, offset)
            if family != AF_INET:
                continue
            attrs = _attrs(data, offset + _FIB_RULE_HDR.size, end)
            src, dst = attrs.get(FRA_SRC), attrs.get(FRA_DST)
            priority, table_attr = attrs.get(FRA_PRIORITY), attrs.get(FRA_TABLE)
            fwmark, fwmask = attrs.get(FRA_FWMARK), attrs.get(FRA_FWMASK)
            out.append(
                Rule(
                    priority=_U32.unpack(priority)[0] if priority else 0,
                    table=(_U32.unpack(table_attr)[0] if table_attr else 0) or table,
                    src=IPv4Network((IPv4Address(src), src_len)) if src else None,
                    dst=IPv4Network((IPv4Address(dst), dst_len)) if dst else None,
                    fwmark=_U32.unpack(fwmark)[0] if fwmark else None,
                    fwmask=_U32.unpack(fwmask)[0] if fwmask else None,
                )
            )
        return out

    def _exchange(
        self, request: int, reply: int, body: bytes, *, dump: bool = False
    ) -> Iterator[tuple[bytes, int, int]]:
        """(buffer, payload offset, payload end) of each `reply`: every one of a dump, else the only one."""
        seq = next(self._seq)
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), request, flags, seq, 0) + body)
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    raise OSError(errno.EBADMSG, "truncated netlink message in a dump")
                payload, end = offset + _NLMSGHDR.size, offset + length
                offset += _align(length)
                if msg_seq != seq:
                    continue  # an answer to an earlier, abandoned request
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    # Both carry an error number (0: done); a failed dump must not read as an empty one.
                    code = -struct.unpack_from("=i", data, payload)[0] if end - payload >= 4 else 0
                    if code > 0:
                        raise OSError(code, f"netlink dump failed: {os.strerror(code)}")
                    return
                if kind == reply:
                    yield data, payload, end
                    if not dump:
                        return
