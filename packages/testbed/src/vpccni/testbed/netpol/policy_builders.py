"""NetworkPolicy objects as plain JSON, built as the Kubernetes e2e suite's GenNetworkPolicy* helpers build
them: a policy, its selectors, peers, ipBlocks, ports and rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

NS_LABEL = "kubernetes.io/metadata.name"

Json = dict[str, Any]


def policy(
    name: str,
    namespace: str = "x",
    *,
    pods: Mapping[str, str] | Json | None = None,
    ingress: Sequence[Json] | None = None,
    egress: Sequence[Json] | None = None,
    types: Sequence[str] | None = None,
) -> Json:
    """`pods` is a matchLabels map, or a whole selector when it has matchExpressions."""
    selector: Json = (
        {} if pods is None else (dict(pods) if "matchExpressions" in pods else {"matchLabels": dict(pods)})
    )
    spec: Json = {"podSelector": selector}
    if ingress is not None:
        spec["ingress"] = list(ingress)
    if egress is not None:
        spec["egress"] = list(egress)
    if types is None:
        given = [t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None]
        types = given or ["Ingress"]
    spec["policyTypes"] = list(types)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def labels(**kv: str) -> Json:
    return {"matchLabels": dict(kv)}


def expr(key: str, op: str, *values: str) -> Json:
    e: Json = {"key": key, "operator": op}
    if values:
        e["values"] = list(values)
    return {"matchExpressions": [e]}


def peer(*, pods: Json | None = None, namespaces: Json | None = None) -> Json:
    out: Json = {}
    if pods is not None:
        out["podSelector"] = pods
    if namespaces is not None:
        out["namespaceSelector"] = namespaces
    return out


def block(cidr: str, *excepts: str) -> Json:
    return {"ipBlock": {"cidr": cidr, **({"except": list(excepts)} if excepts else {})}}


def port(number: int | str | None = None, protocol: str | None = None, end: int | None = None) -> Json:
    out: Json = {}
    if number is not None:
        out["port"] = number
    if protocol is not None:
        out["protocol"] = protocol
    if end is not None:
        out["endPort"] = end
    return out


def rule(
    peers: Sequence[Json] | None = None, ports: Sequence[Json] | None = None, *, to: bool = False
) -> Json:
    out: Json = {}
    if peers is not None:
        out["to" if to else "from"] = list(peers)
    if ports is not None:
        out["ports"] = list(ports)
    return out


def in_ns(ns: str) -> Json:
    return labels(**{NS_LABEL: ns})
