"""Pod wiring (upstream-contract.md §3): veth pair, pod addresses/routes/neighbour, host route and rules.

ipamd calls this with the pod's network namespace as an open file descriptor: the veth is created on the host
with its peer placed directly in the pod namespace, and the pod side is configured from a thread that entered
that namespace (see `netns`).

An IPv6 pod is wired the same way with its /128 and the link-local gateway fe80::1, plus what IPv6 needs to
work at once: no duplicate address detection on the pod's address (it comes from the node's own /80) nor on
either end's link-local address (upstream waits up to 10 s for DAD instead; here the host can solicit the pod
the moment the veth is up).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_interface

from .model import (
    MAIN_TABLE,
    Address,
    IPAddress,
    IPNetwork,
    Link,
    Neighbour,
    Route,
    Rule,
    Scope,
    default_network,
    host_network,
)
from .names import random_local_mac
from .netlink import Netlink
from .netns import NetnsNetlink
from .tables import FROM_POD_RULE_PRIORITY, POD_INTERFACE_RULE_PRIORITY, TO_POD_RULE_PRIORITY

log = logging.getLogger(__name__)

DEFAULT_POD_IFNAME = "eth0"
DEFAULT_MTU = 9001
# Set on the host veth before it comes up, as upstream does (ENOENT, e.g. IPv6 disabled, is ignored).
HOST_VETH_IPV6_SYSCTLS = (("accept_ra", "0"), ("accept_redirects", "1"), ("forwarding", "0"))
# IPv6 pods: the host end's link-local address must be usable at once (it is the source of the neighbour
# solicitations for the pod), and a veth has nothing to collide with.
HOST_VETH_IPV6_POD_SYSCTLS = (("accept_dad", "0"),)
# IPv6 pods, inside the pod before eth0 comes up (upstream sets disable_ipv6=0 on eth0 and lo).
POD_IPV6_SYSCTLS = (
    ("{ifname}", "disable_ipv6", "0"),
    ("{ifname}", "accept_dad", "0"),
    ("lo", "disable_ipv6", "0"),
)
IPV4_GATEWAY = IPv4Address("169.254.1.1")
IPV6_GATEWAY = IPv6Address("fe80::1")


@dataclass(frozen=True, kw_only=True)
class PodInterface:
    """What one pod interface should look like.

    `route_table` is the table of the ENI holding the IP (254 = main for the primary ENI); `index` is the
    interface index for multi-NIC pods (0 for the first interface); `gateway_ip` replaces the link-local
    gateway (egress-cni's interfaces use the first address of their range, as upstream's).
    """

    host_veth: str
    ip: IPAddress
    ifname: str = DEFAULT_POD_IFNAME
    route_table: int = MAIN_TABLE
    mtu: int = DEFAULT_MTU
    index: int = 0
    gateway_ip: IPAddress | None = None

    @property
    def gateway(self) -> IPAddress:
        """169.254.1.(index + 1), or fe80::(index + 1) for IPv6: the pod's link-local next hop, resolved by a
        permanent neighbour entry for the host veth's MAC."""
        if self.gateway_ip is not None:
            return self.gateway_ip
        return (IPV6_GATEWAY if self.ip.version == 6 else IPV4_GATEWAY) + self.index

    @property
    def pod_table(self) -> int:
        """Inside the pod: main for the first interface, table `index` for the others."""
        return MAIN_TABLE if self.index == 0 else self.index


@dataclass(frozen=True, kw_only=True)
class WiredPod:
    """The result of wiring one pod interface."""

    host_veth: str
    host_mac: str
    ifname: str
    container_mac: str
    ip: IPAddress
    gateway: IPAddress


class PodWiringError(RuntimeError):
    """Wiring a pod failed; the message says what to check."""


class PodWiring:
    """Wires, unwires and verifies pods. `host` is a handle in ipamd's (the host's) namespace; thread-safe."""

    def __init__(self, *, host: Netlink, namespaces: NetnsNetlink) -> None:
        self._host = host
        self._namespaces = namespaces
        # Held from the leftover check to the veth's creation: two wirings of one veth name never interleave.
        self._link_lock = threading.Lock()

    # -- wire ---------------------------------------------------------------------------------------------
    def wire(self, netns_fd: int, spec: PodInterface) -> WiredPod:
        """Create the veth pair and all addresses, routes, the neighbour and the rules for `spec`."""
        wired = self.wire_veth(netns_fd, spec)
        try:
            self._host.replace_route(host_route(spec))
            for rule in host_rules(spec):
                self._host.add_rule(rule)
        except Exception:
            self._host.delete_link(spec.host_veth)
            raise
        log.debug("wired %s: %s <-> %s", spec.ip, spec.host_veth, spec.ifname)
        return wired

    def wire_veth(self, netns_fd: int, spec: PodInterface) -> WiredPod:
        """The veth pair, up, with the pod side configured (address, routes, neighbour); no host route or
        rule, which the caller adds (`wire`, or the VLAN wiring of branch-ENI pods)."""
        with self._link_lock:
            if self._host.link(spec.host_veth) is not None:
                log.info("deleting leftover host veth %s before wiring %s", spec.host_veth, spec.ip)
                self._host.delete_link(spec.host_veth)
            # Set explicitly, so udev's persistent MAC policy (it made upstream's MACs collide) never applies;
            # 46 random bits make a clash with any of a few hundred links a 1e-11 chance, so no listing
            # of every link per pod (5 ms at 300 links) to rule it out.
            host_mac = random_local_mac()
            try:
                self._host.add_veth(
                    name=spec.host_veth,
                    mac=host_mac,
                    mtu=spec.mtu,
                    peer_name=spec.ifname,
                    peer_netns_fd=netns_fd,
                )
            except Exception as exc:  # NetlinkError is not an OSError
                raise PodWiringError(
                    f"cannot create veth {spec.host_veth} with peer {spec.ifname} in the pod namespace: "
                    f"{exc}; check that the pod namespace is alive and has no interface named {spec.ifname}"
                ) from exc
        try:
            set_link_ipv6_sysctls(self._host, spec.host_veth, pod_address=spec.ip.version == 6)
            self._host.set_link(spec.host_veth, up=True)
            container_mac = self._namespaces.run(
                netns_fd, lambda pod: _configure_pod_side(pod, spec, host_mac)
            )
        except Exception:
            self._host.delete_link(spec.host_veth)
            raise
        return WiredPod(
            host_veth=spec.host_veth,
            host_mac=host_mac,
            ifname=spec.ifname,
            container_mac=container_mac,
            ip=spec.ip,
            gateway=spec.gateway,
        )

    def set_pod_sysctl(self, netns_fd: int, key: str, value: str) -> None:
        """Write a sysctl inside the pod (e.g. `net/ipv6/conf/eth0/disable_ipv6`); absent keys are ignored."""
        self._namespaces.run(netns_fd, lambda pod: _set_sysctl(pod, key, value))

    def host_veth_exists(self, name: str) -> bool:
        """Whether the host has a link called `name` (`ip link show <name>`)."""
        return self._host.link(name) is not None

    # -- unwire ---------------------------------------------------------------------------------------------
    def unwire(
        self, spec: PodInterface, netns_fd: int | None = None, *, keep_veth: bool = False,
        siblings: Collection[str] = (),
    ) -> None:  # fmt: skip
        """Remove what `wire` added; idempotent, and fine when the pod namespace or the veth is already gone.

        The to-pod (512) and every from-pod (1536) rule of the IP go regardless of table, as upstream does:
        deleted by selector, so a DEL does not list every rule of every pod. With `keep_veth` (a DEL that
        has the pod's namespace, which the runtime destroys next) the veth is left to vanish with it, as
        upstream does: deleting a veth waits for the kernel's RCU grace periods, the slowest part of a DEL.
        Its route goes now all the same, so the address routes nowhere once released. But a namespace that
        keeps other interfaces lives on (an extra attachment removed from a running pod): there the veth
        is deleted, or it would stay as long as the pod. `siblings`: the pod interfaces this DEL removes
        too (a multi-NIC attachment's), which do not count as others.
        """
        ip_net = host_network(spec.ip)
        self._host.delete_rules(priority=TO_POD_RULE_PRIORITY, dst=ip_net)
        self._host.delete_rules(priority=FROM_POD_RULE_PRIORITY, src=ip_net)
        self._host.delete_route(host_route(spec))
        if netns_fd is not None and (keep_veth or spec.index > 0):
            others = self._namespaces.run(netns_fd, lambda pod: _unwire_pod_side(pod, spec, siblings))
            keep_veth = keep_veth and not others
        if not keep_veth:
            self._host.delete_link(spec.host_veth)

    # -- rules of restored pods ---------------------------------------------------------------------------
    def update_host_rules(self, spec: PodInterface) -> list[str]:
        """Make the host rules of an already wired pod exactly what `wire` would add; returns what changed.

        ipamd runs this at start for every pod it restores: older layouts had one from-pod rule per VPC CIDR
        (`from IP to CIDR lookup T prio 1536`), and the pod's ENI table may have been renumbered.
        """
        return self.update_all_host_rules([spec])

    def update_all_host_rules(self, specs: Iterable[PodInterface]) -> list[str]:
        """`update_host_rules` for many pods from one listing of the host's rules (one listing per pod made
        ipamd's start quadratic in the number of pods)."""
        wanted: dict[IPNetwork, list[Rule]] = {}
        for spec in specs:
            rules = wanted.setdefault(host_network(spec.ip), [])
            rules.extend(rule for rule in host_rules(spec) if rule not in rules)
        changes = []
        listed = self._host.rules()
        existing = set(listed)
        for rule in listed:
            if rule.priority not in (TO_POD_RULE_PRIORITY, FROM_POD_RULE_PRIORITY):
                continue
            owners = [wanted[net] for net in (rule.src, rule.dst) if net is not None and net in wanted]
            if any(rule not in rules for rules in owners):
                self._host.delete_rule(rule)
                existing.discard(rule)
                changes.append(f"rule {rule} deleted")
        for rules in wanted.values():
            for rule in rules:
                if rule not in existing:
                    self._host.add_rule(rule)
                    existing.add(rule)
                    changes.append(f"rule {rule} added")
        return changes

    # -- verify -------------------------------------------------------------------------------------------
    def verify(self, netns_fd: int, spec: PodInterface) -> list[str]:
        """Differences between what exists and what `wire` would create (empty when all is in place)."""
        problems: list[str] = []
        host_link = self._host.link(spec.host_veth)
        if host_link is None:
            problems.append(f"host veth {spec.host_veth} missing")
        elif not host_link.up:
            problems.append(f"host veth {spec.host_veth} is down")
        if host_link is not None:
            routes = self._host.routes(MAIN_TABLE)
            if host_route(spec) not in routes:
                problems.append(f"route {host_route(spec)} missing on host")
        existing_rules = set(self._host.rules())
        problems.extend(f"rule {rule} missing" for rule in host_rules(spec) if rule not in existing_rules)
        problems.extend(self.verify_pod_side(netns_fd, spec, host_link))
        return problems

    def verify_pod_side(self, netns_fd: int, spec: PodInterface, host_link: Link | None) -> list[str]:
        """What `wire_veth` set up inside the pod, checked against the host veth `host_link`."""
        host_mac = host_link.mac if host_link is not None else None
        return self._namespaces.run(netns_fd, lambda pod: _verify_pod_side(pod, spec, host_mac))


def _unwire_pod_side(pod: Netlink, spec: PodInterface, siblings: Collection[str]) -> bool:
    """Inside the pod: the interface's rule goes; whether interfaces other than it, its siblings and lo
    remain."""
    if spec.index > 0:
        pod.delete_rule(_pod_interface_rule(spec))
    going = {spec.ifname, "lo", *siblings}
    return any(link.name not in going for link in pod.links())


def set_link_ipv6_sysctls(host: Netlink, ifname: str, *, pod_address: bool = False) -> None:
    """Upstream's IPv6 sysctls for a host-side pod link (veth, VLAN) before it comes up, and no DAD when
    the pod behind it has an IPv6 address (`pod_address`); a kernel without IPv6 has none of them (fine)."""
    sysctls = HOST_VETH_IPV6_SYSCTLS + (HOST_VETH_IPV6_POD_SYSCTLS if pod_address else ())
    for key, value in sysctls:
        # Written only when different: a new link usually has two of them already, and writing
        # `forwarding` takes the kernel's rtnl lock (retrying while other netlink work holds it).
        _set_sysctl(host, f"net/ipv6/conf/{ifname}/{key}", value)


def host_route(spec: PodInterface) -> Route:
    return Route(dst=host_network(spec.ip), ifname=spec.host_veth, scope=Scope.LINK, table=MAIN_TABLE)


def host_rules(spec: PodInterface) -> list[Rule]:
    ip_net = host_network(spec.ip)
    rules = [Rule(priority=TO_POD_RULE_PRIORITY, table=MAIN_TABLE, dst=ip_net)]
    if spec.route_table != MAIN_TABLE:
        rules.append(Rule(priority=FROM_POD_RULE_PRIORITY, table=spec.route_table, src=ip_net))
    return rules


def _pod_interface_rule(spec: PodInterface) -> Rule:
    return Rule(priority=POD_INTERFACE_RULE_PRIORITY, table=spec.pod_table, src=host_network(spec.ip))


def _pod_routes(spec: PodInterface) -> list[Route]:
    gw_net = host_network(spec.gateway)
    return [
        Route(dst=gw_net, ifname=spec.ifname, scope=Scope.LINK, table=spec.pod_table),
        Route(
            dst=default_network(spec.ip.version),
            ifname=spec.ifname,
            gateway=spec.gateway,
            table=spec.pod_table,
        ),
    ]


def _pod_address(spec: PodInterface) -> Address:
    return Address(ifname=spec.ifname, interface=ip_interface(host_network(spec.ip)), nodad=True)


def _set_sysctl(netlink: Netlink, key: str, value: str) -> None:
    """Write `key` only when it exists with another value (ENOENT, e.g. IPv6 disabled, is ignored)."""
    current = netlink.read_sysctl(key)
    if current is not None and current != value:
        netlink.write_sysctl(key, value)


def _configure_pod_side(pod: Netlink, spec: PodInterface, host_mac: str) -> str:
    link = pod.link(spec.ifname)
    if link is None:
        raise PodWiringError(f"{spec.ifname} did not appear in the pod namespace after creating the veth")
    if spec.ip.version == 6:
        for ifname, key, value in POD_IPV6_SYSCTLS:
            _set_sysctl(pod, f"net/ipv6/conf/{ifname.format(ifname=spec.ifname)}/{key}", value)
    pod.set_link(spec.ifname, up=True)
    gw_route, default_route = _pod_routes(spec)
    # Replacing them would take a live interface's routes (an extra attachment not named eth<N> in a
    # running pod): the pod would lose its network once this one went.
    taken = [
        r for r in pod.routes(spec.pod_table)
        if r.dst in (gw_route.dst, default_route.dst) and r.ifname != spec.ifname
    ]  # fmt: skip
    if taken:
        raise PodWiringError(
            f"the pod namespace already routes {taken[0]}; {spec.ifname} would take that route: name further "
            "interfaces of a pod eth1, eth2, ... (each gets its own gateway and route table)"
        )
    pod.replace_route(gw_route)
    if spec.index > 0:
        pod.add_rule(_pod_interface_rule(spec))
    pod.replace_route(default_route)
    pod.add_address(_pod_address(spec))
    pod.replace_neighbour(Neighbour(ifname=spec.ifname, ip=spec.gateway, mac=host_mac, permanent=True))
    return link.mac


def _verify_pod_side(pod: Netlink, spec: PodInterface, host_mac: str | None) -> list[str]:
    link = pod.link(spec.ifname)
    if link is None:
        return [f"interface {spec.ifname} missing in pod netns"]
    problems = [] if link.up else [f"interface {spec.ifname} is down in pod netns"]
    if _pod_address(spec) not in pod.addresses(spec.ifname):
        problems.append(f"address {host_network(spec.ip)} missing on {spec.ifname} in pod netns")
    routes = pod.routes(spec.pod_table)
    problems.extend(
        f"route {route} missing in pod netns" for route in _pod_routes(spec) if route not in routes
    )
    if spec.index > 0 and _pod_interface_rule(spec) not in pod.rules():
        problems.append(f"rule {_pod_interface_rule(spec)} missing in pod netns")
    neighbours = {n.ip: n for n in pod.neighbours(spec.ifname)}
    neighbour = neighbours.get(spec.gateway)
    if neighbour is None or not neighbour.permanent:
        problems.append(f"permanent neighbour {spec.gateway} missing in pod netns")
    elif host_mac is not None and neighbour.mac != host_mac:
        problems.append(f"neighbour {spec.gateway} has MAC {neighbour.mac}, host veth has {host_mac}")
    return problems
