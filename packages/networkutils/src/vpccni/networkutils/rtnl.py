"""A lean rtnetlink request layer: messages packed with `struct`, one raw NETLINK_ROUTE socket, ACKs checked.

pyroute2 builds each request through several layers of objects and an event loop (0.3-0.8 ms a request);
ipamd sends about fifteen per pod ADD, so this packs the few messages pod and ENI wiring need by hand
(about 0.05 ms each) and decodes only the fields `model` has. The socket belongs to the network namespace
of the thread that opened it, and may then be used from any thread (one request at a time: callers lock).

Errors come back as `NetlinkError` (an `OSError` with the kernel's errno), so callers can tell "not there"
(ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL) and "already there" (EEXIST) from real failures.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from .model import IPAddress, IPNetwork, Link, Rule

NETLINK_ROUTE = 0
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: extended-ack attributes follow the (capped) request header
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK = 1, 3, 4, 5
IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_EXT_MASK = 18, 28, 29
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_VLAN_ID = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # the per-link counters are most of a link message and never read here
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02  # ifa_flags: no duplicate address detection (IPv6)
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RTN_UNICAST = 1
RTPROT_BOOT = 3  # what `ip route` and upstream's Go netlink library put on routes they add
RT_TABLE_UNSPEC = 0
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT, NUD_REACHABLE = 0x80, 0x02
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 1, 2, 3, 6, 10, 15, 16
FRA_IP_PROTO = 22  # u8
FR_ACT_TO_TBL = 1

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action, flags
NDMSG = struct.Struct("=BBHiHBB")  # family, pad, pad, ifindex, state, flags, type
RTATTR = struct.Struct("=HH")  # length, type
U32 = struct.Struct("=I")
U16 = struct.Struct("=H")
_ERRNO = struct.Struct("=i")

# Every gone-ness the kernel reports, by object: links ENODEV, routes ESRCH, rules ENOENT, addresses
# EADDRNOTAVAIL.
GONE = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL})
_RECV_BUFFER = 1 << 16  # the kernel caps one dump message batch at 32 KiB


class NetlinkError(OSError):
    """The kernel refused a request; `errno` (alias `code`) says why."""

    @property
    def code(self) -> int:
        return self.errno or 0


def align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, kind) + value + b"\0" * (align(length) - length)


def attr_u32(kind: int, value: int) -> bytes:
    return RTATTR.pack(8, kind) + U32.pack(value)


def attr_u8(kind: int, value: int) -> bytes:
    return attr(kind, bytes([value]))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_ip(kind: int, value: IPAddress) -> bytes:
    return RTATTR.pack(RTATTR.size + len(value.packed), kind) + value.packed


def family_of(version: int) -> int:
    """The socket family of an IP version (4 or 6)."""
    return AF_INET6 if version == 6 else AF_INET


def version_of(family: int) -> int | None:
    """The IP version of a socket family; None for any other family."""
    return 4 if family == AF_INET else 6 if family == AF_INET6 else None


def address_of(raw: bytes) -> IPAddress:
    """An address from its 4 or 16 packed bytes."""
    return ip_address(raw)


def network_of(raw: bytes | None, prefixlen: int, version: int) -> IPNetwork:
    """A network from a packed address (None: the zero address) and a prefix length."""
    if version == 6:
        return IPv6Network((IPv6Address(raw or bytes(16)), prefixlen))
    return IPv4Network((IPv4Address(raw or bytes(4)), prefixlen))


def attr_nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind, b"".join(parts))


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


SKIP_STATS = attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)


def parse_attrs(data: bytes | bytearray, offset: int, end: int) -> dict[int, bytes]:
    """The rtattrs in `data[offset:end]` by type (without NLA_F_NESTED/NLA_F_NET_BYTEORDER)."""
    out: dict[int, bytes] = {}
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        out[kind & 0x3FFF] = bytes(data[offset + RTATTR.size : offset + length])
        offset += align(length)
    return out


def string(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def u32(value: bytes | None, default: int = 0) -> int:
    return U32.unpack(value)[0] if value else default


def decode_link(data: bytes | bytearray, offset: int, end: int) -> Link:
    _, _, index, flags, _ = IFINFOMSG.unpack_from(data, offset)
    attrs = parse_attrs(data, offset + IFINFOMSG.size, end)
    info = attrs.get(IFLA_LINKINFO)
    kind = parse_attrs(info, 0, len(info)).get(IFLA_INFO_KIND) if info else None
    return Link(
        index=index,
        name=string(attrs.get(IFLA_IFNAME, b"")),
        mac=mac_text(attrs.get(IFLA_ADDRESS, b"")),
        mtu=u32(attrs.get(IFLA_MTU)),
        up=bool(flags & IFF_UP),
        kind=string(kind) if kind else "",
    )


def decode_rule(data: bytes | bytearray, offset: int, end: int) -> Rule | None:
    """An IPv4 or IPv6 rule as `ip rule` / `ip -6 rule` shows it; None for other families."""
    family, dst_len, src_len, _, table, _, _, _, _ = FIB_RULE_HDR.unpack_from(data, offset)
    version = version_of(family)
    if version is None:
        return None
    attrs = parse_attrs(data, offset + FIB_RULE_HDR.size, end)
    src, dst = attrs.get(FRA_SRC), attrs.get(FRA_DST)
    fwmark, fwmask, iif = attrs.get(FRA_FWMARK), attrs.get(FRA_FWMASK), attrs.get(FRA_IIFNAME)
    ip_proto = attrs.get(FRA_IP_PROTO)
    return Rule(
        priority=u32(attrs.get(FRA_PRIORITY)),
        table=u32(attrs.get(FRA_TABLE)) or table,
        src=network_of(src, src_len, version) if src else None,
        dst=network_of(dst, dst_len, version) if dst else None,
        fwmark=u32(fwmark) if fwmark else None,
        fwmask=u32(fwmask) if fwmask else None,
        iif=string(iif) if iif else None,
        family=version,
        ip_proto=ip_proto[0] if ip_proto else None,
    )


def ifinfo(*, index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return IFINFOMSG.pack(AF_UNSPEC, 0, index, flags, change)


def _error_text(code: int, data: bytearray, payload: int, end: int, flags: int) -> str:
    """strerror, plus the kernel's extended-ack message (e.g. "Nexthop has invalid gateway") if any."""
    text = os.strerror(code)
    start = payload + _ERRNO.size + NLMSGHDR.size  # the request header, capped (NETLINK_CAP_ACK)
    if flags & NLM_F_ACK_TLVS and start < end:
        reason = parse_attrs(data, start, end).get(NLMSGERR_ATTR_MSG)
        if reason:
            text = f"{text} ({string(reason)})"
    return text


class RtnlSocket:
    """One raw NETLINK_ROUTE socket: requests answered by an ACK or an error, single gets and dumps.

    Not thread-safe: the owner serialises calls. A request interrupted half-way (an exception while a dump
    was being read) leaves messages of its sequence number behind; later requests skip them.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = itertools.count(1)
        self._buffer = bytearray(_RECV_BUFFER)

    @classmethod
    def open(cls) -> RtnlSocket:
        """A socket in the calling thread's current network namespace."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            sock.bind((0, 0))
        except OSError:
            sock.close()
            raise
        # Errors without a copy of the request, and with the kernel's own reason where it gives one.
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            with contextlib.suppress(OSError):  # older kernels: plain errno only
                sock.setsockopt(SOL_NETLINK, option, 1)
        return cls(sock)

    def close(self) -> None:
        self._sock.close()

    def request(self, kind: int, body: bytes, *, flags: int = 0) -> None:
        """Send one change request and wait for its ACK; raises `NetlinkError` when the kernel refuses."""
        for _ in self._exchange(kind, body, NLM_F_REQUEST | NLM_F_ACK | flags, reply=-1, dump=False):
            pass

    def get(self, kind: int, reply: int, body: bytes) -> tuple[bytearray, int, int] | None:
        """A single get (e.g. RTM_GETLINK by name): (buffer copy, payload offset, payload end)."""
        for data, offset, end in self._exchange(kind, body, NLM_F_REQUEST, reply=reply, dump=False):
            return data, offset, end
        return None

    def dump(self, kind: int, reply: int, body: bytes) -> Iterator[tuple[bytearray, int, int]]:
        """(buffer, payload offset, payload end) of each `reply` message of a dump. Consume it fully
        before the next request: each buffer is valid until the next item."""
        return self._exchange(kind, body, NLM_F_REQUEST | NLM_F_DUMP, reply=reply, dump=True)

    def _exchange(
        self, kind: int, body: bytes, flags: int, *, reply: int, dump: bool
    ) -> Iterator[tuple[bytearray, int, int]]:
        seq = next(self._seq)
        self._sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body)
        buffer = self._buffer
        while True:
            size = self._sock.recv_into(buffer)
            offset = 0
            while offset + NLMSGHDR.size <= size:
                length, msg_kind, msg_flags, msg_seq, _ = NLMSGHDR.unpack_from(buffer, offset)
                if length < NLMSGHDR.size:
                    raise NetlinkError(errno.EBADMSG, "truncated netlink message")
                payload, end = offset + NLMSGHDR.size, offset + length
                offset += align(length)
                if msg_seq != seq:
                    continue  # an answer to an earlier, abandoned request
                if msg_kind in (NLMSG_DONE, NLMSG_ERROR):
                    # Both carry an error number (0: done, or the ACK); a failed dump must not read as empty.
                    code = -_ERRNO.unpack_from(buffer, payload)[0] if end - payload >= 4 else 0
                    if code > 0:
                        raise NetlinkError(code, _error_text(code, buffer, payload, end, msg_flags))
                    return
                if msg_kind == reply:
                    if not dump:
                        # A get is answered by one message, then nothing else: copy it out and finish.
                        yield bytearray(buffer[payload:end]), 0, end - payload
                        return
                    yield buffer, payload, end
