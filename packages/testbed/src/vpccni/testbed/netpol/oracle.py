"""What the Kubernetes NetworkPolicy API says a connection does, computed straight from the NetworkPolicy
objects: the conformance suite's expected matrix for every port and protocol.

Deliberately independent of the product: no PolicyEndpoints, no controller, no compiled sets; the API's
rules applied to raw objects, one connection at a time. Its agreement with the Kubernetes e2e suite's
hand-written truth tables is checked in the unit tests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vpccni.netpol.selectors import LabelSelector

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

Raw = Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class World:
    """The pods, namespaces and policies a connection is judged in."""

    pods: Mapping[str, OraclePod]  # "ns/name" -> pod
    namespace_labels: Mapping[str, Mapping[str, str]]
    policies: Sequence[Raw]


@dataclass(frozen=True, kw_only=True)
class OraclePod:
    namespace: str
    name: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    named_ports: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (name, protocol) -> number


def _types(policy: Raw) -> set[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def _ns_labels(world: World, namespace: str) -> dict[str, str]:
    return {NAMESPACE_NAME_LABEL: namespace, **world.namespace_labels.get(namespace, {})}


def _peer_matches(peer: Raw, policy_ns: str, other: OraclePod, world: World) -> bool:
    if peer.get("ipBlock"):
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        if ip not in ipaddress.ip_network(block["cidr"], strict=False):
            return False
        return not any(ip in ipaddress.ip_network(e, strict=False) for e in block.get("except") or ())
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None:
        if other.namespace != policy_ns:
            return False
    elif not LabelSelector.from_json(ns_sel).matches(_ns_labels(world, other.namespace)):
        return False
    return pod_sel is None or LabelSelector.from_json(pod_sel).matches(other.labels)


def _port_matches(ports: Sequence[Raw], port: int, protocol: str, server: OraclePod) -> bool:
    if not ports:
        return True
    for p in ports:
        proto = p.get("protocol") or "TCP"
        if proto != protocol:
            continue
        value = p.get("port")
        if value is None:
            return True
        if isinstance(value, str) and not value.isdigit():
            if server.named_ports.get((value, proto)) == port:
                return True
            continue
        first = int(value)
        if first <= port <= int(p.get("endPort") or first):
            return True
    return False


def _direction_allows(
    world: World,
    subject: OraclePod,
    other: OraclePod,
    server: OraclePod,
    port: int,
    protocol: str,
    direction: str,
) -> bool:
    """Whether `subject`'s policies for `direction` let the connection with `other` through."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in world.policies
        if p["metadata"]["namespace"] == subject.namespace
        and direction in _types(p)
        and LabelSelector.from_json((p.get("spec") or {}).get("podSelector") or {}).matches(subject.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in (policy.get("spec") or {}).get(key) or ():
            peers = rule.get(peers_key)
            if peers and not any(
                _peer_matches(peer, policy["metadata"]["namespace"], other, world) for peer in peers
            ):
                continue
            if _port_matches(rule.get("ports") or (), port, protocol, server):
                return True
    return False


def allowed(world: World, src: str, dst: str, port: int, protocol: str) -> bool:
    """A new connection from pod `src` to pod `dst` on `port`/`protocol`: egress of src and ingress of dst."""
    client, server = world.pods[src], world.pods[dst]
    return _direction_allows(world, client, server, server, port, protocol, "Egress") and _direction_allows(
        world, server, client, server, port, protocol, "Ingress"
    )
