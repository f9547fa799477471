"""Branch-ENI pod wiring (security groups for pods): the pod's veth plus a VLAN link on the trunk ENI.

A branch ENI reaches the node as VLAN-tagged frames on the trunk ENI's link. Each branch pod gets the VLAN
link `vlan.eth.<id>` on the trunk with the branch ENI's MAC, and route table `<id> + 100` holding the branch
subnet's gateway (docs/design/upstream-contract.md §3, upstream's SetupBranchENIPodNetwork):

- strict mode (default): every packet of the pod goes through its branch ENI, even to a pod on the same
  node. `ip rule` at priority 10 sends what arrives on the VLAN link and what leaves the pod's veth to the
  VLAN table, which routes the pod's address to its veth and everything else to the gateway;
- standard mode: the pod is routed like any other (to-pod rule 512 and the host route in main), and what
  it sends goes out through the VLAN (from-pod rule 1536 into the VLAN table), so traffic between pods of a
  node stays on the node.

Teardown needs only the VLAN id, the pod address and the host veth, which the CNI result carries, and
removes what either mode adds (the pod may have been wired under the other mode).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from .model import IPAddress, Link, Route, Rule, Scope, default_network, host_network
from .names import vlan_link_name
from .netlink import Netlink
from .pod import PodInterface, PodWiring, WiredPod, host_route, host_rules, set_link_ipv6_sysctls
from .tables import VLAN_RULE_PRIORITY, route_table_for_vlan

log = logging.getLogger(__name__)


class EnforcingMode(enum.Enum):
    """`POD_SECURITY_GROUP_ENFORCING_MODE` (the conflist's `podSGEnforcingMode`)."""

    STRICT = "strict"
    STANDARD = "standard"


@dataclass(frozen=True, kw_only=True)
class BranchPodInterface:
    """One branch-ENI pod interface: `pod` is its veth side (its `route_table` is the VLAN table)."""

    pod: PodInterface
    vlan_id: int
    branch_mac: str
    gateway: IPAddress  # the branch ENI's subnet gateway (IPv4: the subnet's first host)
    trunk_link: str  # the trunk ENI's link on the host
    mode: EnforcingMode = EnforcingMode.STRICT

    def __post_init__(self) -> None:
        table = route_table_for_vlan(self.vlan_id)
        if self.pod.route_table != table:
            raise ValueError(
                f"a VLAN {self.vlan_id} pod routes through table {table}, not {self.pod.route_table}"
            )

    @property
    def vlan_link(self) -> str:
        return vlan_link_name(self.vlan_id)

    @property
    def table(self) -> int:
        return self.pod.route_table


class BranchPodWiring:
    """Wires, unwires and verifies branch-ENI pods; `pods` does the veth part. Thread-safe."""

    def __init__(self, *, host: Netlink, pods: PodWiring) -> None:
        self._host = host
        self._pods = pods

    def wire(self, netns_fd: int, spec: BranchPodInterface) -> WiredPod:
        wired = self._pods.wire_veth(netns_fd, spec.pod)
        try:
            # A pod recreated under the same name may have left its veth's rules behind (upstream does this).
            self._host.delete_rules(
                priority=VLAN_RULE_PRIORITY, iif=spec.pod.host_veth, family=spec.pod.ip.version
            )
            self._setup_vlan(spec)
            self._host.replace_route(self._host_pod_route(spec))
            for rule in self._host_pod_rules(spec):
                self._host.add_rule(rule)
        except Exception:
            self.unwire(spec.pod, spec.vlan_id)
            raise
        log.debug("wired %s on VLAN %d (%s mode)", spec.pod.ip, spec.vlan_id, spec.mode.value)
        return wired

    def unwire(
        self, pod: PodInterface, vlan_id: int, netns_fd: int | None = None, *, keep_veth: bool = False
    ) -> None:
        """Remove what `wire` added in either mode; idempotent (fine when any part is already gone)."""
        table = route_table_for_vlan(vlan_id)
        self._host.delete_link(vlan_link_name(vlan_id))  # its routes in the VLAN table go with it
        self._host.delete_rules(priority=VLAN_RULE_PRIORITY, table=table, family=pod.ip.version)
        self._host.delete_route(_strict_route(pod, table))
        self._pods.unwire(pod, netns_fd, keep_veth=keep_veth)

    def verify(self, netns_fd: int, spec: BranchPodInterface) -> list[str]:
        """Differences between what exists and what `wire` would create (empty when all is in place)."""
        problems: list[str] = []
        veth = self._host.link(spec.pod.host_veth)
        if veth is None or not veth.up:
            problems.append(f"host veth {spec.pod.host_veth} {'missing' if veth is None else 'down'}")
        vlan = self._host.link(spec.vlan_link)
        problems.extend(_vlan_problems(spec, vlan))
        if vlan is not None:
            routes = self._host.routes(spec.table)
            problems.extend(f"route {r} missing on host" for r in _vlan_routes(spec) if r not in routes)
        pod_route = self._host_pod_route(spec)
        if veth is not None and pod_route not in self._host.routes(pod_route.table):
            problems.append(f"route {pod_route} missing on host")
        rules = set(self._host.rules())
        problems.extend(f"rule {r} missing" for r in self._host_pod_rules(spec) if r not in rules)
        problems.extend(self._pods.verify_pod_side(netns_fd, spec.pod, veth))
        return problems

    def _setup_vlan(self, spec: BranchPodInterface) -> None:
        name = spec.vlan_link
        if self._host.delete_link(name):
            # A leftover (the trunk changed, or a pod of this VLAN was not deleted): upstream replaces it too.
            log.info("replaced leftover VLAN link %s", name)
        try:
            self._host.add_vlan(name=name, parent=spec.trunk_link, vlan_id=spec.vlan_id, mac=spec.branch_mac)
        except LookupError:
            raise LookupError(
                f"the trunk ENI's link {spec.trunk_link} is gone: the VPC resource controller may have "
                "replaced the trunk; ipamd finds the new one on its next reconcile"
            ) from None
        set_link_ipv6_sysctls(self._host, name, pod_address=spec.pod.ip.version == 6)
        self._host.set_link(name, up=True)
        for route in _vlan_routes(spec):
            self._host.replace_route(route)

    @staticmethod
    def _host_pod_route(spec: BranchPodInterface) -> Route:
        if spec.mode is EnforcingMode.STRICT:
            return _strict_route(spec.pod, spec.table)
        return host_route(spec.pod)

    @staticmethod
    def _host_pod_rules(spec: BranchPodInterface) -> list[Rule]:
        if spec.mode is EnforcingMode.STRICT:
            return [
                Rule(priority=VLAN_RULE_PRIORITY, table=spec.table, iif=iif, family=spec.pod.ip.version)
                for iif in (spec.vlan_link, spec.pod.host_veth)
            ]
        return host_rules(spec.pod)


def _strict_route(pod: PodInterface, table: int) -> Route:
    """`<pod>/32 (or /128) dev <host veth> scope link table <VLAN table>`."""
    return Route(dst=host_network(pod.ip), ifname=pod.host_veth, scope=Scope.LINK, table=table)


def _vlan_routes(spec: BranchPodInterface) -> list[Route]:
    """`<gw>/32 dev vlan.eth.N scope link` and `default via <gw> dev vlan.eth.N` in the VLAN table."""
    return [
        Route(dst=host_network(spec.gateway), ifname=spec.vlan_link, scope=Scope.LINK, table=spec.table),
        Route(
            dst=default_network(spec.gateway.version),
            ifname=spec.vlan_link,
            gateway=spec.gateway,
            table=spec.table,
        ),
    ]


def _vlan_problems(spec: BranchPodInterface, vlan: Link | None) -> list[str]:
    if vlan is None:
        return [f"VLAN link {spec.vlan_link} missing"]
    problems = [] if vlan.up else [f"VLAN link {spec.vlan_link} is down"]
    if vlan.mac != spec.branch_mac.lower():
        problems.append(
            f"VLAN link {spec.vlan_link} has MAC {vlan.mac}, the branch ENI has {spec.branch_mac}"
        )
    return problems
