"""IPv6 in the VPC namespace, as EC2 routes it in a dual-stack VPC.

EC2's router answers on every ENI from a link-local address (here `fe80:ec2::1`, the same on every ENI link,
as link-local addresses are per link) and is each node's IPv6 default gateway, as learned from its router
advertisements. It delivers every IPv6 address and /80 prefix assigned to an ENI to that ENI's link-local
address (EUI-64 of its MAC), with a permanent neighbour so nothing is solicited into the node. The VPC's /56
is unreachable except for what is assigned; everything else goes to the internet host (IPv6 addresses are
public: no NAT and no public-IP rule, unlike IPv4).

Duplicate address detection is off in the VPC and host namespaces: EC2 never hands out a duplicate, and a
tentative address would stall the first packets by a second.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from pyroute2 import IPRoute

ROUTER_LINK_LOCAL = ipaddress.IPv6Address("fe80:ec2::1")
# Documentation space (RFC 3849) outside the VPC's /56: the internet host's IPv6 side.
DEFAULT_INTERNET_HOST6 = ipaddress.IPv6Interface("2001:db8:ffff::10/64")
IFA_F_NODAD = 0x02

ROUTER_SYSCTLS = {
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
HOST_SYSCTLS = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}


def link_local_of(mac: str) -> ipaddress.IPv6Address:
    """The EUI-64 link-local address an interface with this MAC has (RFC 4291 appendix A)."""
    octets = bytearray(int(part, 16) for part in mac.split(":"))
    if len(octets) != 6:
        raise ValueError(f"{mac!r} is not a 48-bit MAC address")
    octets[0] ^= 0x02
    eui64 = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui64)


def vpc_host_interface(vpc: ipaddress.IPv6Network) -> ipaddress.IPv6Interface:
    """The VPC host's IPv6: ::10 in the last /64 of the VPC's block (clear of subnets made from the first)."""
    last = ipaddress.IPv6Network((int(vpc.broadcast_address) & ~((1 << 64) - 1), 64))
    return ipaddress.IPv6Interface(f"{last.network_address + 0x10}/64")


def add_address(ipr: IPRoute, index: int, address: ipaddress.IPv6Interface) -> None:
    ipr.addr(
        "replace",
        index=index,
        family=socket.AF_INET6,
        address=str(address.ip),
        prefixlen=address.network.prefixlen,
        flags=IFA_F_NODAD,
    )


def plug_port(ipr: IPRoute, index: int, mac: str) -> None:
    """Give an ENI's VPC-side link the router's link-local address and the ENI's link-local neighbour."""
    add_address(ipr, index, ipaddress.IPv6Interface(f"{ROUTER_LINK_LOCAL}/64"))
    ipr.neigh(
        "replace",
        family=socket.AF_INET6,
        dst=str(link_local_of(mac)),
        lladdr=mac,
        ifindex=index,
        state="permanent",
    )


def plug_branch(ipr: IPRoute, index: int, mac: str, addresses: Sequence[ipaddress.IPv6Address]) -> None:
    """A branch ENI's VLAN sub-port: the router's link-local address (the node's VLAN table routes to it) and
    each branch address delivered to the branch ENI's MAC, with a permanent neighbour as for its IPv4."""
    add_address(ipr, index, ipaddress.IPv6Interface(f"{ROUTER_LINK_LOCAL}/64"))
    for ip in addresses:
        ipr.neigh(
            "replace", family=socket.AF_INET6, dst=str(ip), lladdr=mac, ifindex=index, state="permanent"
        )
        ipr.route("replace", family=socket.AF_INET6, dst=str(ip), dst_len=128, oif=index)


def route_to_port(ipr: IPRoute, op: str, net: ipaddress.IPv6Network, *, index: int, mac: str) -> None:
    """Add ("replace") or remove ("del") the route delivering `net` to the ENI behind link `index`."""
    kwargs = {"gateway": str(link_local_of(mac))} if op != "del" else {}
    ipr.route(
        op, family=socket.AF_INET6, dst=str(net.network_address), dst_len=net.prefixlen, oif=index, **kwargs
    )


def start_router(
    ipr: IPRoute,
    *,
    vpc: ipaddress.IPv6Network,
    internet_link: int,
    internet_host: ipaddress.IPv6Interface,
    vpc_host_link: int,
    vpc_host: ipaddress.IPv6Interface,
) -> None:
    """The router's IPv6 side: the VPC block unreachable, the two hosts' links addressed, default to the
    internet host."""
    ipr.route(
        "add", family=socket.AF_INET6, dst=str(vpc.network_address), dst_len=vpc.prefixlen, type="unreachable"
    )
    for index, host in ((internet_link, internet_host), (vpc_host_link, vpc_host)):
        add_address(ipr, index, ipaddress.IPv6Interface(f"{router_side(host)}/{host.network.prefixlen}"))
    ipr.route("replace", family=socket.AF_INET6, dst="::", dst_len=0, gateway=str(internet_host.ip))


def router_side(host: ipaddress.IPv6Interface) -> ipaddress.IPv6Address:
    """The router's address on a host's link: ::1 of the host's network."""
    return host.network.network_address + 1


def configure_host(ipr: IPRoute, index: int, host: ipaddress.IPv6Interface) -> None:
    """A host namespace's IPv6: its address on eth0 and the router as default gateway."""
    add_address(ipr, index, host)
    ipr.route("replace", family=socket.AF_INET6, dst="::", dst_len=0, gateway=str(router_side(host)))
