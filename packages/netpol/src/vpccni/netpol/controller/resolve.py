"""One NetworkPolicy resolved against the cluster's pods and namespaces into PolicyEndpoint objects
(upstream's schema: the policy's selector and isolation, the selected pods, every allowed peer as a CIDR with
numeric ports). A pure function: the reconciler feeds it snapshots.

Where upstream's controller is looser, this one follows the Kubernetes API:
- a rule whose ports all fail to resolve (named ports no pod has) allows nothing, never every port;
- a named port of an ingress rule resolves on the policy's target pods for every kind of peer (ipBlock too);
  of an egress rule, on each peer pod (a rule without `to` resolves it on every pod of the cluster);
- entries are merged only when CIDR and excepts are equal (merging excepts of different entries would cut
  allowed addresses);
- finished and host-network pods are never peers (a finished pod's address may be reused).
Service ClusterIPs are not added: the agent judges packets after kube-proxy's DNAT.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence

from vpccni.netpol.controller.cluster import ClusterPod, Namespace
from vpccni.netpol.model import (
    EndpointInfo,
    IPNetwork,
    PodEndpoint,
    PolicyEndpoint,
    PolicyRef,
    Port,
)
from vpccni.netpol.networkpolicy import NetworkPolicy, Peer, PolicyPort, PolicyRule

EVERYWHERE: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
MAX_NAME = 253
DEFAULT_CHUNK_SIZE = 200  # upstream's --endpoint-chunk-size default


class Cluster:
    """Pods indexed by namespace, and namespaces by name (one snapshot)."""

    def __init__(self, pods: Iterable[ClusterPod], namespaces: Iterable[Namespace]) -> None:
        self.namespaces = {n.name: n for n in namespaces}
        self.pods_by_namespace: dict[str, list[ClusterPod]] = defaultdict(list)
        for pod in sorted(pods, key=lambda p: p.key):
            if pod.addressable:
                self.pods_by_namespace[pod.namespace].append(pod)

    def all_pods(self) -> list[ClusterPod]:
        return [p for ns in sorted(self.pods_by_namespace) for p in self.pods_by_namespace[ns]]

    def selected(self, policy: NetworkPolicy) -> list[ClusterPod]:
        return [
            p
            for p in self.pods_by_namespace.get(policy.namespace, ())
            if policy.pod_selector.matches(p.labels)
        ]

    def peer_pods(self, peer: Peer, policy_namespace: str) -> list[ClusterPod]:
        if peer.namespace_selector is None:
            namespaces = [policy_namespace]
        else:
            selector = peer.namespace_selector
            namespaces = sorted(n for n, ns in self.namespaces.items() if selector.matches(ns.labels))
        pods = [p for n in namespaces for p in self.pods_by_namespace.get(n, ())]
        if peer.pod_selector is None:
            return pods
        return [p for p in pods if peer.pod_selector.matches(p.labels)]


def resolve_ports(ports: Sequence[PolicyPort], on: Iterable[ClusterPod] | None) -> tuple[Port, ...] | None:
    """Numeric ports for a rule: named ports looked up on the pods `on` (None: nothing to look them up on).
    () means every port; None means the rule had ports and none resolved, so it allows nothing."""
    if not ports:
        return ()
    out: set[Port] = set()
    pods = list(on or ())
    for p in ports:
        if p.port is None:
            out.add(Port(protocol=p.protocol))
        elif isinstance(p.port, int):
            out.add(Port(protocol=p.protocol, port=p.port, end_port=p.end_port))
        else:
            for pod in pods:
                number = pod.named_ports.get((p.port, p.protocol))
                if number is not None:
                    out.add(Port(protocol=p.protocol, port=number))
    return tuple(sorted(out, key=lambda x: (x.protocol.value, x.first, x.last))) or None


def _ingress_rule(
    rule: PolicyRule, policy: NetworkPolicy, cluster: Cluster, targets: list[ClusterPod]
) -> list[EndpointInfo]:
    ports = resolve_ports(rule.ports, targets)
    if ports is None:
        return []
    if rule.peers is None:
        return [EndpointInfo(cidr=net, ports=ports) for net in EVERYWHERE]
    out = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            out.append(EndpointInfo(cidr=peer.ip_block.cidr, excepts=peer.ip_block.excepts, ports=ports))
            continue
        for pod in cluster.peer_pods(peer, policy.namespace):
            assert pod.ip is not None
            out.append(EndpointInfo(cidr=ipaddress.ip_network(pod.ip), ports=ports))
    return out


def _egress_rule(rule: PolicyRule, policy: NetworkPolicy, cluster: Cluster) -> list[EndpointInfo]:
    out: list[EndpointInfo] = []
    named = any(isinstance(p.port, str) for p in rule.ports)
    if rule.peers is None:
        numeric = [p for p in rule.ports if not isinstance(p.port, str)]
        if numeric or not rule.ports:  # (only named ports: nothing here, and resolve_ports([]) means all)
            ports = resolve_ports(numeric, None)
            assert ports is not None
            out.extend(EndpointInfo(cidr=net, ports=ports) for net in EVERYWHERE)
        if named:  # a named port can only mean a pod's port: look it up on every pod
            out.extend(_pods_on_their_ports(rule, cluster.all_pods(), only_named=True))
        return out
    for peer in rule.peers:
        if peer.ip_block is not None:
            ports = resolve_ports(rule.ports, None)
            if ports is not None:
                out.append(EndpointInfo(cidr=peer.ip_block.cidr, excepts=peer.ip_block.excepts, ports=ports))
            continue
        out.extend(_pods_on_their_ports(rule, cluster.peer_pods(peer, policy.namespace), only_named=False))
    return out


def _pods_on_their_ports(
    rule: PolicyRule, pods: Iterable[ClusterPod], *, only_named: bool
) -> list[EndpointInfo]:
    wanted = [p for p in rule.ports if isinstance(p.port, str)] if only_named else list(rule.ports)
    out = []
    for pod in pods:
        ports = resolve_ports(wanted, [pod])
        if ports is not None:
            assert pod.ip is not None
            out.append(EndpointInfo(cidr=ipaddress.ip_network(pod.ip), ports=ports))
    return out


def merge_endpoints(entries: Iterable[EndpointInfo]) -> list[EndpointInfo]:
    """Entries with the same CIDR and excepts become one with the union of their ports (no ports wins)."""
    merged: dict[tuple[IPNetwork, tuple[IPNetwork, ...]], set[Port] | None] = {}
    for e in entries:
        key = (e.cidr, tuple(sorted(e.excepts, key=_net_order)))
        if key in merged and merged[key] is None:
            continue
        if not e.ports:
            merged[key] = None
        else:
            merged.setdefault(key, set())
            current = merged[key]
            assert current is not None
            current.update(e.ports)
    return [
        EndpointInfo(
            cidr=cidr,
            excepts=excepts,
            ports=()
            if ports is None
            else tuple(sorted(ports, key=lambda x: (x.protocol.value, x.first, x.last))),
        )
        for (cidr, excepts), ports in sorted(
            merged.items(), key=lambda kv: (_net_order(kv[0][0]), [_net_order(e) for e in kv[0][1]])
        )
    ]


def _net_order(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


def endpoint_base_name(policy: NetworkPolicy) -> str:
    """`<policy name>-<5 hex of its uid>`: stable for the policy's life, new when it is recreated."""
    digest = hashlib.sha1((policy.uid or f"{policy.namespace}/{policy.name}").encode()).hexdigest()[:5]
    return f"{policy.name[: MAX_NAME - 12]}-{digest}"


def resolve(
    policy: NetworkPolicy, cluster: Cluster, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[PolicyEndpoint]:
    """The PolicyEndpoints for `policy`: one, or several with the same selector and isolation when the
    lists exceed `chunk_size` entries (the agent unions the objects of one policy)."""
    targets = cluster.selected(policy)
    ingress = merge_endpoints(e for r in policy.ingress for e in _ingress_rule(r, policy, cluster, targets))
    egress = merge_endpoints(e for r in policy.egress for e in _egress_rule(r, policy, cluster))
    selected = [
        PodEndpoint(name=p.name, namespace=p.namespace, pod_ip=p.ip, host_ip=p.host_ip)
        for p in targets
        if p.ip is not None
    ]
    chunks = max(1, *(-(-len(items) // chunk_size) for items in (ingress, egress, selected)))
    base = endpoint_base_name(policy)
    ref = PolicyRef(name=policy.name, namespace=policy.namespace)
    out = []
    for i in range(chunks):
        window = slice(i * chunk_size, (i + 1) * chunk_size)
        out.append(
            PolicyEndpoint(
                name=base if i == 0 else f"{base}-{i}",
                namespace=policy.namespace,
                policy_ref=ref,
                pod_selector=policy.pod_selector,
                pod_isolation=policy.policy_types,
                pod_selector_endpoints=tuple(selected[window]),
                ingress=tuple(ingress[window]),
                egress=tuple(egress[window]),
            )
        )
    return out
