"""One instance's network namespace (its "host"), seen from the EC2 side.

It holds what an EC2 instance has before any CNI runs: `lo`, the primary ENI `eth0` configured as the AMI's
DHCP client would (primary IP with the subnet's prefix length, default route via the subnet gateway), IP
forwarding on (as the EKS AMI sets it), and link-local service addresses (IMDS at 169.254.169.254, the
testbed's API endpoints at 169.254.170.2) on `lo` (not a dummy: some kernels lack that link type), served
through sockets created inside the namespace. In a dual-stack VPC eth0 also gets the instance's IPv6 address
(a /128, as DHCPv6 hands it out) and the VPC router's link-local address as IPv6 default gateway (as its
router advertisements give it).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from . import ipv6 as v6
from . import namespaces as ns
from .forwarder import TcpForwarder

log = logging.getLogger(__name__)

IMDS_IP = ipaddress.IPv4Address("169.254.169.254")
SERVICES_IP = ipaddress.IPv4Address("169.254.170.2")


class NodeNetwork:
    """The namespace of one testbed instance. `create()` makes it, `delete()` removes it and all it holds."""

    def __init__(self, *, netns: str) -> None:
        self.netns = netns
        self._forwarders: list[TcpForwarder] = []

    @property
    def path(self) -> str:
        return str(ns.netns_path(self.netns))

    def create(self) -> None:
        ns.create_netns(self.netns)
        ns.set_sysctls(self.netns, {"net.ipv4.ip_forward": "1"})
        with ns.open_iproute(self.netns) as ipr:
            index = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=index, state="up")
            for ip in (IMDS_IP, SERVICES_IP):
                ipr.addr("add", index=index, address=str(ip), prefixlen=32)

    def configure_primary(
        self,
        *,
        ifname: str,
        address: ipaddress.IPv4Interface,
        gateway: ipaddress.IPv4Address,
        ipv6: ipaddress.IPv6Address | None = None,
    ) -> None:
        """What the AMI's DHCP client does on eth0: `ip addr add <ip>/<len> dev eth0; ip link set eth0 up;
        ip route add default via <gateway>`; with `ipv6`, also `ip -6 addr add <ipv6>/128 dev eth0` and
        `ip -6 route add default via fe80:ec2::1 dev eth0`."""
        if ipv6 is not None:  # before the link comes up: its link-local address is usable at once
            ns.set_sysctls(self.netns, {f"net.ipv6.conf.{ifname}.accept_dad": "0"})
        with ns.open_iproute(self.netns) as ipr:
            index = ipr.link_lookup(ifname=ifname)[0]
            ipr.addr("replace", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
            if ipv6 is not None:
                v6.add_address(ipr, index, ipaddress.IPv6Interface(f"{ipv6}/128"))
            ipr.link("set", index=index, state="up")
            ipr.route("replace", dst="default", gateway=str(gateway), oif=index)
            if ipv6 is not None:
                ipr.route(
                    "replace",
                    family=socket.AF_INET6,
                    dst="::",
                    dst_len=0,
                    gateway=str(v6.ROUTER_LINK_LOCAL),
                    oif=index,
                )

    def listen(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> socket.socket:
        """A listening TCP socket on ip:port inside this namespace (port 0: any free port)."""
        return ns.listen_tcp(self.netns, str(ip), port)

    def forward(self, *, port: int, target: tuple[str, int], ip: ipaddress.IPv4Address = SERVICES_IP) -> str:
        """Relay ip:port inside the namespace to `target` on the root namespace's loopback; returns the
        in-namespace `http://ip:port` endpoint."""
        forwarder = TcpForwarder(
            listener=self.listen(ip, port), target=target, name=f"fwd-{self.netns}-{port}"
        )
        forwarder.start()
        self._forwarders.append(forwarder)
        host, bound = forwarder.address
        return f"http://{host}:{bound}"

    def links(self) -> dict[str, str]:
        """ifname -> MAC of every link in the namespace."""
        with ns.open_iproute(self.netns) as ipr:
            return {str(link.get("ifname")): str(link.get("address")) for link in ipr.get_links()}

    def delete(self) -> None:
        """Stop the forwarders and delete the namespace. Idempotent."""
        for forwarder in self._forwarders:
            forwarder.stop()
        self._forwarders.clear()
        ns.delete_netns(self.netns)
