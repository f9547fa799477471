"""The VPC namespace: the router behind every ENI, plus an "internet" host and a plain VPC host behind it.

As on EC2 the router: owns each subnet's gateway (.1) on its `lo` and answers ARP for it (and, by proxy ARP,
for every other address, as the VPC's virtual router does); delivers each private IP and /28 prefix to the MAC
of the ENI holding it (a permanent neighbour for the ENI's primary IP and routes `via` it), so nothing is ever
ARPed on the node side; enforces the source/destination check (`srccheck`); and drops traffic for unassigned
VPC addresses. A dual-stack VPC (`VpcLayout(vpc_ipv6_cidr=...)`) routes IPv6 as well (see `ipv6`).

Not thread-safe: the owner (`Datapath`) serialises calls.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from vpccni.networkutils.netlink import open_netlink
from vpccni.testbed.ec2.security import SecurityState

from . import ipv6
from . import namespaces as ns
from .secgroups import SecurityGroups
from .srccheck import SourceCheck

log = logging.getLogger(__name__)

# Gateways live on lo: ARP is answered for any local address (arp_ignore=0), and some kernels (the dev VM's)
# have no dummy link type.
GATEWAY_LINK = "lo"
INTERNET_LINK = "inet0"
VPC_HOST_LINK = "vpchost0"
RTNH_F_ONLINK = 4


@dataclass(frozen=True, kw_only=True)
class VpcLayout:
    """Addresses of the VPC namespace's fixed neighbours."""

    vpc_cidr: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network("10.0.0.0/16"))
    # Documentation range (RFC 5737): never a real host, and only reachable through the VPC namespace.
    internet_host: ipaddress.IPv4Interface = field(
        default_factory=lambda: ipaddress.IPv4Interface("203.0.113.10/24")
    )
    vpc_host: ipaddress.IPv4Interface = field(
        default_factory=lambda: ipaddress.IPv4Interface("10.0.200.10/24")
    )
    eni_mtu: int = 9001
    # False: only node primary IPs (public IPs) reach the internet, so pods need the node's SNAT.
    # True: a NAT gateway translates any VPC source (for EXTERNALSNAT=true setups).
    nat_gateway: bool = False
    # A /56 makes the VPC dual-stack: IPv6 routed to ENIs, and IPv6 on the internet and VPC hosts.
    vpc_ipv6_cidr: ipaddress.IPv6Network | None = None
    internet_host6: ipaddress.IPv6Interface = ipv6.DEFAULT_INTERNET_HOST6

    @property
    def vpc_host6(self) -> ipaddress.IPv6Interface | None:
        """The VPC host's IPv6 (in the last /64 of the VPC's block), in a dual-stack VPC."""
        return ipv6.vpc_host_interface(self.vpc_ipv6_cidr) if self.vpc_ipv6_cidr is not None else None


@dataclass(frozen=True, kw_only=True)
class EniPort:
    """An ENI attachment as the datapath wires it: a veth pair from the VPC namespace into a node's."""

    eni_id: str
    mac: str
    node_netns: str
    node_ifname: str
    primary_ip: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network
    public: bool = False  # the primary IP has a public IP association (reaches the internet host)
    ipv6: bool = False  # in a dual-stack VPC: the router reaches the ENI's link-local address

    @property
    def veth(self) -> str:
        """The VPC-side link name: stable per ENI and within IFNAMSIZ."""
        return "x" + self.eni_id.removeprefix("eni-")[-14:]


@dataclass(frozen=True, kw_only=True)
class BranchPort:
    """A branch ENI as the datapath wires it: a VLAN sub-port of its trunk's port (security groups for pods),
    so the VPC sends and takes its frames on the trunk tagged with its VLAN id."""

    eni_id: str
    trunk_eni_id: str
    vlan_id: int
    mac: str
    primary_ip: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network
    ipv6: tuple[ipaddress.IPv6Address, ...] = ()  # its IPv6 addresses, in a dual-stack subnet

    @property
    def link(self) -> str:
        return "b" + self.eni_id.removeprefix("eni-")[-14:]

    @property
    def router_mac(self) -> str:
        """The VPC router's MAC on this VLAN (locally administered, stable per branch ENI)."""
        digest = hashlib.sha1(self.eni_id.encode()).digest()
        return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


@dataclass(kw_only=True)
class _Plugged:
    port: EniPort
    index: int
    routed: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=set)


@dataclass(frozen=True, kw_only=True)
class _Branch:
    port: BranchPort
    index: int


class VpcRouter:
    """Creates and runs the VPC, internet and VPC-host namespaces."""

    def __init__(
        self, *, vpc_netns: str, internet_netns: str, vpc_host_netns: str, layout: VpcLayout
    ) -> None:
        self.vpc_netns = vpc_netns
        self.internet_netns = internet_netns
        self.vpc_host_netns = vpc_host_netns
        self.layout = layout
        self._ipr: IPRoute | None = None  # open only during a call: pyroute2 handles are bound to one thread
        self._depth = 0
        self._gateways: set[ipaddress.IPv4Address] = set()
        self._ports: dict[str, _Plugged] = {}
        self._branches: dict[str, _Branch] = {}
        self._security = SecurityGroups(netns=vpc_netns)
        self._srccheck = SourceCheck(
            netns=vpc_netns,
            internet_link=INTERNET_LINK,
            nat_gateway=layout.nat_gateway,
            ipv6=layout.vpc_ipv6_cidr is not None,
        )

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            raise RuntimeError("no netlink handle outside a router call")
        return self._ipr

    @contextmanager
    def _netlink(self) -> Iterator[None]:
        """Hold a netlink handle into the VPC namespace for the current call (re-entrant)."""
        if self._depth == 0:
            self._ipr = ns.open_iproute(self.vpc_netns)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._ipr is not None:
                self._ipr.close()
                self._ipr = None

    def start(self) -> None:
        for name in (self.vpc_netns, self.internet_netns, self.vpc_host_netns):
            ns.create_netns(name)
        ns.set_sysctls(
            self.vpc_netns,
            {
                "net.ipv4.ip_forward": "1",
                "net.ipv4.conf.all.rp_filter": "0",
                "net.ipv4.conf.default.rp_filter": "0",
                # Every link made from now on answers ARP for addresses routed elsewhere (delay: see plug()).
                "net.ipv4.conf.default.proxy_arp": "1",
                **(ipv6.ROUTER_SYSCTLS if self.layout.vpc_ipv6_cidr is not None else {}),
            },
        )
        if self.layout.vpc_ipv6_cidr is not None:
            for name in (self.internet_netns, self.vpc_host_netns):
                ns.set_sysctls(name, ipv6.HOST_SYSCTLS)
        with self._netlink():
            self.ipr.link("set", index=self._index("lo"), state="up")
            # Unassigned VPC addresses are unreachable rather than sent towards the internet host.
            self.ipr.route("add", dst=str(self.layout.vpc_cidr), type="unreachable")
            self._attach_host(
                self.internet_netns, INTERNET_LINK, self.layout.internet_host, router_default=True
            )
            self._attach_host(self.vpc_host_netns, VPC_HOST_LINK, self.layout.vpc_host, router_default=False)
            self._start_ipv6()
        self._sync_srccheck()

    def _start_ipv6(self) -> None:
        vpc, vpc_host = self.layout.vpc_ipv6_cidr, self.layout.vpc_host6
        if vpc is None or vpc_host is None:
            return
        ipv6.start_router(
            self.ipr,
            vpc=vpc,
            internet_link=self._index(INTERNET_LINK),
            internet_host=self.layout.internet_host6,
            vpc_host_link=self._index(VPC_HOST_LINK),
            vpc_host=vpc_host,
        )
        for netns, host in (
            (self.internet_netns, self.layout.internet_host6),
            (self.vpc_host_netns, vpc_host),
        ):
            with ns.open_iproute(netns) as ipr:
                ipv6.configure_host(ipr, ipr.link_lookup(ifname="eth0")[0], host)

    def stop(self) -> None:
        """Delete the three namespaces (every veth into a node namespace dies with them). Idempotent."""
        self._ports.clear()
        self._branches.clear()
        self._gateways.clear()
        self._security.reset()
        ns.delete_all([self.vpc_netns, self.internet_netns, self.vpc_host_netns])

    def ensure_gateway(self, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
        """Own the subnet's gateway address (network + 1), as the VPC router does; returns it."""
        gateway = subnet.network_address + 1
        if gateway not in self._gateways:
            with self._netlink():
                self.ipr.addr("replace", index=self._index(GATEWAY_LINK), address=str(gateway), prefixlen=32)
            self._gateways.add(gateway)
        return gateway

    def plug(self, port: EniPort) -> None:
        """Create the ENI's veth pair; the node end appears DOWN with the ENI's MAC and no address."""
        if port.eni_id in self._ports:
            return
        with self._netlink():
            self._plug(port)
        self._sync_srccheck()
        log.info("plugged %s as %s/%s (%s)", port.eni_id, port.node_netns, port.node_ifname, port.veth)

    def _plug(self, port: EniPort) -> None:
        self.ensure_gateway(port.subnet)
        node_fd = ns.netns_path(port.node_netns)
        with open(node_fd, "rb") as node:
            self.ipr.link(
                "add",
                ifname=port.veth,
                kind="veth",
                mtu=self.layout.eni_mtu,
                peer={
                    "ifname": port.node_ifname,
                    "address": port.mac,
                    "mtu": self.layout.eni_mtu,
                    "net_ns_fd": node.fileno(),
                },
            )
        index = self._index(port.veth)
        # Proxy ARP replies wait up to proxy_delay (0.8 s) by default; the VPC router answers at once. Only
        # per-link in a non-initial namespace (neigh/default is not namespaced).
        ns.set_sysctls(self.vpc_netns, {f"net.ipv4.neigh.{port.veth}.proxy_delay": "0"})
        self.ipr.link("set", index=index, state="up")
        # EC2 knows each ENI's MAC: deliver to it directly, never ARP into the node.
        self.ipr.neigh("replace", dst=str(port.primary_ip), lladdr=port.mac, ifindex=index, state="permanent")
        self.ipr.route("replace", dst=str(port.primary_ip), dst_len=32, oif=index, scope="link")
        if port.ipv6:
            ipv6.plug_port(self.ipr, index, port.mac)
        self._ports[port.eni_id] = _Plugged(port=port, index=index)

    def plug_branch(self, port: BranchPort) -> bool:
        """Create the branch ENI's VLAN sub-port on its trunk's port; False when this datapath does not host
        the trunk."""
        trunk = self._ports.get(port.trunk_eni_id)
        if trunk is None:
            return False
        if port.eni_id in self._branches:
            return True
        with self._netlink():
            self.ensure_gateway(port.subnet)
            # A kernel VLAN link, or on kernels without 802.1Q the product's tc BPF equivalent: real tags on
            # the trunk either way (the node's end is made by the product the same way).
            mtu = self.layout.eni_mtu
            ns.in_netns(self.vpc_netns, lambda: _add_vlan(port, parent=trunk.port.veth, mtu=mtu))
            index = self._index(port.link)
            ns.set_sysctls(self.vpc_netns, {f"net.ipv4.neigh.{port.link}.proxy_delay": "0"})
            self.ipr.link("set", index=index, state="up")
            self.ipr.neigh(
                "replace", dst=str(port.primary_ip), lladdr=port.mac, ifindex=index, state="permanent"
            )
            self.ipr.route("replace", dst=str(port.primary_ip), dst_len=32, oif=index, scope="link")
            if port.ipv6:
                ipv6.plug_branch(self.ipr, index, port.mac, port.ipv6)
        self._branches[port.eni_id] = _Branch(port=port, index=index)
        self._sync_srccheck()
        log.info("plugged branch %s on %s VLAN %d", port.eni_id, port.trunk_eni_id, port.vlan_id)
        return True

    def unplug(self, eni_id: str) -> None:
        """Delete the ENI's veth pair (the node's ethN disappears with it) and its routes; a trunk's branch
        sub-ports go first; a branch ENI loses its sub-port."""
        branch = self._branches.pop(eni_id, None)
        if branch is not None:
            with self._netlink():
                self.ipr.link("del", index=branch.index)
            self._sync_srccheck()
            log.info("unplugged branch %s", eni_id)
            return
        plugged = self._ports.get(eni_id)
        if plugged is None:
            return
        for other in [b.port.eni_id for b in self._branches.values() if b.port.trunk_eni_id == eni_id]:
            self.unplug(other)
        del self._ports[eni_id]
        with self._netlink():
            self.ipr.link("del", index=plugged.index)
        self._sync_srccheck()
        log.info("unplugged %s from %s", eni_id, plugged.port.node_netns)

    def branches(self) -> list[BranchPort]:
        return [b.port for b in self._branches.values()]

    def apply_security(self, state: SecurityState) -> None:
        """Filter every port's packets by its ENI's security groups now."""
        ports = {p.port.veth: eni_id for eni_id, p in self._ports.items()}
        ports.update({b.port.link: eni_id for eni_id, b in self._branches.items()})
        self._security.apply(ports=ports, state=state)

    def dropped_by_security(self, eni_id: str, direction: str) -> int:
        """Packets the ENI's security groups dropped leaving (`out`) or reaching (`in`) it."""
        link = self._branches[eni_id].port.link if eni_id in self._branches else self._ports[eni_id].port.veth
        return self._security.dropped_packets(link, direction)

    def route_addresses(
        self,
        eni_id: str,
        *,
        secondaries: list[ipaddress.IPv4Address],
        prefixes: list[ipaddress.IPv4Network],
        ipv6_nets: Sequence[ipaddress.IPv6Network] = (),
    ) -> None:
        """Make the VPC deliver exactly these secondary IPs and prefixes (besides the primary) to the ENI,
        and, on a dual-stack port, these IPv6 addresses (as /128s) and /80 prefixes."""
        plugged = self._ports.get(eni_id)
        if plugged is None:
            return
        want: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = {
            ipaddress.IPv4Network(ip) for ip in secondaries
        }
        want |= set(prefixes)
        if plugged.port.ipv6:
            want |= set(ipv6_nets)
        with self._netlink():
            self._reroute(plugged, want)
        plugged.routed = want
        self._sync_srccheck()

    def _reroute(self, plugged: _Plugged, want: set[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        for net in _sorted(want - plugged.routed):
            if isinstance(net, ipaddress.IPv6Network):
                ipv6.route_to_port(self.ipr, "replace", net, index=plugged.index, mac=plugged.port.mac)
                continue
            self.ipr.route(
                "replace",
                dst=str(net.network_address),
                dst_len=net.prefixlen,
                gateway=str(plugged.port.primary_ip),
                oif=plugged.index,
                flags=RTNH_F_ONLINK,
            )
        for net in _sorted(plugged.routed - want):
            if isinstance(net, ipaddress.IPv6Network):
                ipv6.route_to_port(self.ipr, "del", net, index=plugged.index, mac=plugged.port.mac)
                continue
            self.ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen, oif=plugged.index)

    def routed(self, eni_id: str) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The secondary IPs and prefixes currently routed to the ENI."""
        plugged = self._ports.get(eni_id)
        return set(plugged.routed) if plugged else set()

    def plugged(self) -> list[EniPort]:
        return [p.port for p in self._ports.values()]

    def dropped_by_srccheck(self, eni_id: str, *, family: int = 4) -> int:
        """Packets the source/destination check dropped on the ENI since its addresses last changed."""
        return self._srccheck.dropped_packets(self._ports[eni_id].port.veth, family=family)

    def _sync_srccheck(self) -> None:
        ports = {
            p.port.veth: (ipaddress.IPv4Network(p.port.primary_ip), *_sorted(p.routed))
            for p in self._ports.values()
        }
        for branch in self._branches.values():
            ports[branch.port.link] = (
                ipaddress.IPv4Network(branch.port.primary_ip),
                *(ipaddress.IPv6Network(ip) for ip in branch.port.ipv6),
            )
        public = [p.port.primary_ip for p in self._ports.values() if p.port.public]
        self._srccheck.apply(ports=ports, public_ips=public)

    def _attach_host(
        self, netns: str, link: str, host: ipaddress.IPv4Interface, *, router_default: bool
    ) -> None:
        """Wire a one-interface host namespace to the router: host `eth0` <-> router `link`."""
        router_ip = next(host.network.hosts())
        with open(ns.netns_path(netns), "rb") as target:
            self.ipr.link(
                "add", ifname=link, kind="veth", peer={"ifname": "eth0", "net_ns_fd": target.fileno()}
            )
        index = self._index(link)
        self.ipr.addr("add", index=index, address=str(router_ip), prefixlen=host.network.prefixlen)
        self.ipr.link("set", index=index, state="up")
        if router_default:
            self.ipr.route("add", dst="default", gateway=str(host.ip))
        with ns.open_iproute(netns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=eth0, address=str(host.ip), prefixlen=host.network.prefixlen)
            ipr.link("set", index=eth0, state="up")
            ipr.route("add", dst="default", gateway=str(router_ip))

    def _index(self, ifname: str) -> int:
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            raise RuntimeError(f"link {ifname} is missing from namespace {self.vpc_netns}")
        return int(found[0])


def _add_vlan(port: BranchPort, *, parent: str, mtu: int) -> None:
    with open_netlink() as netlink:
        netlink.add_vlan(name=port.link, parent=parent, vlan_id=port.vlan_id, mac=port.router_mac, mtu=mtu)


def _sorted(
    nets: set[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """IPv4 first, then IPv6, each in address order (the two families do not compare)."""
    return sorted(nets, key=lambda net: (net.version, int(net.network_address), net.prefixlen))
