"""The conformance cases, as data.

`E2E_CASES` are the Kubernetes e2e suite's NetworkPolicy cases (`test/e2e/network/netpol/network_policy.go`:
the TCP, UDP and SCTP contexts), each with its policies and its hand-written truth table over the pods the
upstream case uses. `UPDATE_CASES` are vpccni's own: changes while policies exist (policy changed and
removed, labels changed, pods deleted and their addresses given to new pods, port ranges, ipBlock ingress).

Every `Check` is judged twice by the runner: the hand-written table on its port and protocol, and the whole
matrix (every pod pair, ports 80 and 81, every protocol) against the API's semantics (`oracle`). Addresses
are placeholders resolved when the step runs: `{ip:x/b}` is pod x/b's address, `{net4:x/b}` the /4 around it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vpccni.testbed.netpol.truth import Expect, all_egress, all_ingress

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
ALL_PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in POD_NAMES)
NS_LABEL = "kubernetes.io/metadata.name"

Json = dict[str, Any]


# -- policy builders (the e2e suite's GenNetworkPolicy* helpers, as plain JSON) ------------------------------
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


# -- steps ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Apply:
    """Create the NetworkPolicy, or replace its spec (the e2e suite's CreatePolicy / UpdatePolicy)."""

    policy: Json


@dataclass(frozen=True, kw_only=True)
class DeletePolicies:
    pass


@dataclass(frozen=True, kw_only=True)
class DeletePolicy:
    namespace: str
    name: str


@dataclass(frozen=True, kw_only=True)
class PodLabels:
    pod: str
    labels: Mapping[str, str | None]  # None removes a label


@dataclass(frozen=True, kw_only=True)
class NamespaceLabels:
    namespace: str
    labels: Mapping[str, str | None]


@dataclass(frozen=True, kw_only=True)
class DeletePod:
    pod: str


@dataclass(frozen=True, kw_only=True)
class RunPod:
    """Create a pod; with `reuse_ip_of`, keep creating filler pods on that pod's node until the new pod gets
    the address the named (deleted) pod had."""

    pod: str
    node: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    reuse_ip_of: str = ""


@dataclass(frozen=True, kw_only=True)
class Check:
    """Upstream's hand-written truth table (over the case's pods, on `port`/`protocol`), then the whole
    matrix against the API's semantics."""

    port: int
    protocol: str = "TCP"
    expect: tuple[Expect, ...] = ()


Step = Apply | DeletePolicies | DeletePolicy | PodLabels | NamespaceLabels | DeletePod | RunPod | Check


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    pods: tuple[str, ...]
    steps: tuple[Step, ...]
    source: str = "kubernetes e2e"
    needs_sctp: bool = False

    @property
    def protocols(self) -> set[str]:
        return {s.protocol for s in self.steps if isinstance(s, Check)}


def _e(src: str, dst: str, allowed: bool) -> Expect:
    return Expect(src=src, dst=dst, allowed=allowed)


def case(name: str, pods: str, *steps: Step, source: str = "kubernetes e2e") -> Case:
    return Case(
        name=name,
        pods=tuple(pods.split()),
        steps=steps,
        source=source,
        needs_sctp=any(isinstance(s, Check) and s.protocol == "SCTP" for s in steps),
    )


def check(port: int, *expect: Expect, protocol: str = "TCP") -> Check:
    return Check(port=port, protocol=protocol, expect=expect)


X_A, X_B, X_C = "x/a", "x/b", "x/c"
ANY, X, Y, Z = "*/*", "x/*", "y/*", "z/*"

# fmt: off
_DENY_INGRESS = Apply(policy=policy("deny-ingress", pods={}, ingress=[]))
_PORT81_FROM_Y = rule([peer(namespaces=in_ns("y"))], [port(81, "TCP")])
_EXPECT_Y_ONLY = (_e(X, X_A, False), _e(Y, X_A, True), _e(Z, X_A, False))


def _ns_pod_from_y_a(protocol: str) -> Case:
    return case(
        f"{protocol}: should enforce policy to allow traffic only from a pod in a different namespace "
        "based on PodSelector and NamespaceSelector",
        "x/a x/b y/a",
        Apply(policy=policy("allow-ns-y-pod-a-via-namespace-pod-selector", pods={"pod": "a"},
                            ingress=[rule([peer(namespaces=in_ns("y"), pods=labels(pod="a"))])])),
        check(80, all_ingress(X_A, False), _e("y/a", X_A, True), protocol=protocol),
    )


def _deny_ingress(protocol: str) -> Case:
    return case(
        f"{protocol}: should support a 'default-deny-ingress' policy", "x/a x/b y/a y/b",
        Apply(policy=policy("deny-all", pods={}, ingress=[])),
        check(80, _e(ANY, X, False), protocol=protocol),
    )


def _ports_81_from_y(protocol: str) -> Case:
    return case(
        f"{protocol}: should enforce policy based on Ports", "x/a x/b y/a z/a",
        Apply(policy=policy("allow-ingress-on-port-81-ns-x", pods={"pod": "a"},
                            ingress=[rule([peer(namespaces=in_ns("y"))], [port(81, protocol)])])),
        check(81, _e(X, X_A, False), _e(Z, X_A, False), protocol=protocol),
    )


E2E_CASES: tuple[Case, ...] = (
    case("should support a 'default-deny-ingress' policy", "x/a x/b y/a y/b",
         _DENY_INGRESS, check(80, _e(ANY, X, False))),
    case("should support a 'default-deny-all' policy", "x/a x/b y/a",
         Apply(policy=policy("deny-all", pods={}, ingress=[], egress=[])),
         check(80, _e(ANY, X, False), _e(X, ANY, False))),
    case("should enforce policy to allow traffic from pods within server namespace based on PodSelector",
         "x/a x/b x/c y/a",
         Apply(policy=policy("x-a-allows-x-b", pods={"pod": "a"},
                             ingress=[rule([peer(pods=labels(pod="b"))])])),
         check(80, all_ingress(X_A, False), _e(X_B, X_A, True))),
    case("should enforce policy to allow ingress traffic for a target", "x/a x/b y/a",
         Apply(policy=policy("deny-all", pods={}, ingress=[])),
         Apply(policy=policy("allow-all-to-a", pods={"pod": "a"},
                             ingress=[rule([peer(pods={}, namespaces={})])])),
         check(80, all_ingress(X_A, True), all_ingress(X_B, False))),
    case("should enforce policy to allow ingress traffic from pods in all namespaces", "x/a x/b y/a z/a",
         Apply(policy=policy("allow-from-another-ns", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces={"matchLabels": {}})])])),
         check(80)),
    case("should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
         "x/a x/b y/a z/a",
         Apply(policy=policy("allow-client-a-via-ns-selector", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=in_ns("y"))])])),
         check(80, _e(X, X_A, False), _e(Z, X_A, False))),
    case("should enforce policy based on PodSelector with MatchExpressions", "x/a x/b y/a",
         Apply(policy=policy("x-a-allows-x-b", pods={"pod": "a"},
                             ingress=[rule([peer(pods=expr("pod", "In", "b"))])])),
         check(80, all_ingress(X_A, False), _e(X_B, X_A, True))),
    case("should enforce policy based on NamespaceSelector with MatchExpressions", "x/a x/b y/a z/a",
         Apply(policy=policy("allow-ns-y-match-selector", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=expr(NS_LABEL, "In", "y"))])])),
         check(80, _e(X, X_A, False), _e(Z, X_A, False))),
    case("should enforce policy based on PodSelector or NamespaceSelector", "x/a x/b x/c y/a",
         Apply(policy=policy("allow-ns-y-match-selector", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=expr(NS_LABEL, "NotIn", "x")),
                                            peer(pods=labels(pod="b"))])])),
         check(80, _e(X_A, X_A, False), _e(X_C, X_A, False))),
    case("should enforce policy based on PodSelector and NamespaceSelector", "x/a x/b y/a y/b z/b",
         Apply(policy=policy("allow-ns-y-podselector-and-nsselector", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=expr(NS_LABEL, "NotIn", "x"),
                                                 pods=labels(pod="b"))])])),
         check(80, all_ingress(X_A, False), _e("y/b", X_A, True), _e("z/b", X_A, True))),
    case("should enforce policy based on Multiple PodSelectors and NamespaceSelectors", "x/a x/b y/a y/b y/c",
         Apply(policy=policy("allow-ns-y-z-pod-b-c", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=expr(NS_LABEL, "NotIn", "x"),
                                                 pods=expr("pod", "In", "b", "c"))])])),
         check(80, _e(X, X_A, False), _e("y/a", X_A, False))),
    case("should enforce policy based on any PodSelectors", "x/a x/b x/c",
         Apply(policy=policy("allow-ns-x-pod-b-c", pods={"pod": "a"},
                             ingress=[rule([peer(pods=labels(pod="b")), peer(pods=labels(pod="c"))])])),
         check(80, all_ingress(X_A, False), _e(X_B, X_A, True), _e(X_C, X_A, True))),
    _ns_pod_from_y_a("TCP"),
    case("should enforce policy based on Ports", "x/a x/b y/a y/b z/a",
         Apply(policy=policy("allow-client-a-via-ns-selector", pods={"pod": "a"}, ingress=[_PORT81_FROM_Y])),
         check(81, *_EXPECT_Y_ONLY)),
    case("should enforce multiple, stacked policies with overlapping podSelectors", "x/a x/b y/a y/b z/a",
         Apply(policy=policy("allow-client-a-via-ns-selector", pods={"pod": "a"}, ingress=[_PORT81_FROM_Y])),
         check(81, *_EXPECT_Y_ONLY),
         check(80, all_ingress(X_A, False)),
         Apply(policy=policy("allow-client-a-via-ns-selector-80", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=in_ns("y"))], [port(80, "TCP")])])),
         check(80, *_EXPECT_Y_ONLY)),
    case("should support allow-all policy", "x/a x/b y/a",
         Apply(policy=policy("allow-all", pods={}, ingress=[rule()])),
         check(80), check(81)),
    case("should allow ingress access on one named port", "x/a x/b y/a",
         Apply(policy=policy("allow-all", pods={}, ingress=[rule(None, [port("serve-81-tcp")])])),
         check(81), check(80, _e(ANY, X, False))),
    case("should allow ingress access from namespace on one named port", "x/a x/b y/a z/a",
         Apply(policy=policy("allow-client-a-via-ns-selector-80", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=in_ns("y"))], [port("serve-80-tcp", "TCP")])])),
         check(80, _e(X, X_A, False), _e(Z, X_A, False)),
         check(81, all_ingress(X_A, False))),
    case("should allow egress access on one named port", "x/a y/a",
         Apply(policy=policy("allow-egress", pods={}, egress=[rule(None, [port("serve-80-tcp")], to=True)])),
         check(80), check(81, _e(X, ANY, False))),
    case("should enforce updated policy", "x/a y/a",
         Apply(policy=policy("allow-all-mutate-to-deny-all", pods={}, ingress=[rule()])),
         check(81),
         Apply(policy=policy("allow-all-mutate-to-deny-all", pods={}, ingress=[])),
         check(81, _e(ANY, X, False))),
    case("should allow ingress access from updated namespace", "x/a y/a",
         Apply(policy=policy("allow-client-a-via-ns-selector", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=labels(ns2="updated"))])])),
         check(80, all_ingress(X_A, False)),
         NamespaceLabels(namespace="y", labels={"ns2": "updated"}),
         check(80, all_ingress(X_A, False), _e(Y, ANY, True))),
    case("should allow ingress access from updated pod", "x/a x/b",
         Apply(policy=policy("allow-client-a-via-pod-selector", pods={"pod": "a"},
                             ingress=[rule([peer(pods=labels(pod="b", pod2="updated"))])])),
         check(80, all_ingress(X_A, False)),
         PodLabels(pod=X_B, labels={"pod": "b", "pod2": "updated"}),
         check(80, all_ingress(X_A, False), _e(X_B, X_A, True))),
    case("should deny ingress from pods on other namespaces", "x/a x/b y/a z/a",
         Apply(policy=policy("deny-empty-policy", pods={}, ingress=[rule([peer(pods={"matchLabels": {}})])])),
         check(80, _e(Y, X, False), _e(Z, X, False))),
    case("should deny ingress access to updated pod", "x/a y/a",
         Apply(policy=policy("deny-ingress-via-label-selector", pods={"target": "isolated"}, ingress=[])),
         check(80),
         PodLabels(pod=X_A, labels={"target": "isolated"}),
         check(80, all_ingress(X_A, False))),
    case("should deny egress from pods based on PodSelector", "x/a x/b y/a",
         Apply(policy=policy("deny-egress-pod-a", pods={"pod": "a"}, egress=[])),
         check(80, all_egress(X_A, False))),
    case("should deny egress from all pods in a namespace", "x/a x/b y/a",
         Apply(policy=policy("deny-egress-ns-x", pods={}, egress=[])),
         check(80, _e(X, ANY, False))),
    case("should work with Ingress, Egress specified together", "x/a x/b x/c y/a",
         Apply(policy=policy("allow-client-a-via-pod-selector", pods={"pod": "a"},
                             ingress=[rule([peer(pods=labels(pod="b"))])],
                             egress=[rule(None, [port(80)], to=True)], types=["Egress", "Ingress"])),
         check(80, all_ingress(X_A, False), _e(X_B, X_A, True)),
         check(81, all_ingress(X_A, False), all_egress(X_A, False), _e(X_B, X_A, True))),
    case("should support denying of egress traffic on the client side (even if the server explicitly allows "
         "this traffic)", "x/a y/a y/b",
         Apply(policy=policy("allow-to-ns-y-pod-a", pods={"pod": "a"},
                             egress=[rule([peer(namespaces=in_ns("y"), pods=labels(pod="a"))], to=True)])),
         Apply(policy=policy("allow-from-xa-on-ya-match-selector", "y", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=in_ns("x"), pods=labels(pod="a"))])])),
         Apply(policy=policy("allow-from-xa-on-yb-match-selector", "y", pods={"pod": "b"},
                             ingress=[rule([peer(namespaces=in_ns("x"), pods=labels(pod="a"))])])),
         check(80, _e(X_A, ANY, False), _e(ANY, "y/a", False), _e(X_A, "y/a", True), _e(ANY, "y/b", False))),
    case("should enforce egress policy allowing traffic to a server in a different namespace based on "
         "PodSelector and NamespaceSelector", "x/a y/a y/b",
         Apply(policy=policy("allow-to-ns-y-pod-a", pods={"pod": "a"},
                             egress=[rule([peer(namespaces=in_ns("y"), pods=labels(pod="a"))], to=True)])),
         check(80, all_egress(X_A, False), _e(X_A, "y/a", True))),
    case("should enforce ingress policy allowing any port traffic to a server on a specific protocol",
         "x/a y/a",
         Apply(policy=policy("allow-ingress-by-proto", pods={"pod": "a"},
                             ingress=[rule(None, [port(protocol="TCP")])])),
         check(80), check(80, all_ingress(X_A, False), protocol="UDP")),
    case("should enforce multiple ingress policies with ingress allow-all policy taking precedence",
         "x/a y/a",
         Apply(policy=policy("allow-ingress-port-80", pods={}, ingress=[rule(None, [port(80)])])),
         check(81, _e(ANY, X, False)),
         Apply(policy=policy("allow-ingress", pods={}, ingress=[rule()])),
         check(81)),
    case("should enforce multiple egress policies with egress allow-all policy taking precedence", "x/a y/a",
         Apply(policy=policy("allow-egress-port-80", pods={}, egress=[rule(None, [port(80)], to=True)])),
         check(81, _e(X, ANY, False)),
         Apply(policy=policy("allow-egress", pods={}, egress=[rule(to=True)])),
         check(81)),
    case("should stop enforcing policies after they are deleted", "x/a y/a",
         Apply(policy=policy("deny-all", pods={}, ingress=[], egress=[])),
         check(80, _e(X, ANY, False), _e(ANY, X, False)),
         DeletePolicies(),
         check(80)),
    case("should allow egress access to server in CIDR block", "x/a y/a y/b",
         Apply(policy=policy("allow-client-a-via-cidr-egress-rule", pods={"pod": "a"},
                             egress=[rule([block("{ip:y/b}/32")], to=True)])),
         check(80, all_egress(X_A, False), _e(X_A, "y/b", True))),
    case("should enforce except clause while egress access to server in CIDR block", "x/a x/b x/c",
         Apply(policy=policy("allow-client-a-via-cidr-egress-rule", pods={"pod": "a"},
                             egress=[rule([block("{net4:x/b}", "{ip:x/b}/32")], to=True)])),
         check(80, _e(X_A, X_B, False))),
    case("should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", "x/a x/b x/c",
         Apply(policy=policy("allow-client-a-via-cidr-egress-rule", pods={"pod": "a"},
                             egress=[rule([block("{net4:x/b}", "{ip:x/b}/32")], to=True)])),
         check(80, _e(X_A, X_B, False)),
         Apply(policy=policy("allow-client-a-via-cidr-egress-rule", pods={"pod": "a"},
                             egress=[rule([block("{ip:x/b}/32")], to=True)])),
         check(80, all_egress(X_A, False), _e(X_A, X_B, True))),
    case("should enforce policies to check ingress and egress policies can be controlled independently "
         "based on PodSelector", "x/a x/b y/a",
         Apply(policy=policy("allow-egress-for-target", pods={"pod": "a"}, egress=[rule(to=True)])),
         check(80),
         Apply(policy=policy("deny-ingress-via-label-selector", pods={"pod": "a"}, ingress=[])),
         check(80, all_ingress(X_A, False))),
    case("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't "
         "support SCTP", "x/a y/a",
         _DENY_INGRESS,
         Apply(policy=policy("allow-only-sctp-ingress-on-port-81", pods={"pod": "a"},
                             ingress=[rule(None, [port(81, "SCTP")])])),
         check(81, _e(ANY, X, False))),
    case("should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin "
         "doesn't support SCTP", "x/a y/a",
         Apply(policy=policy("allow-only-sctp-ingress-on-port-80", pods={"pod": "a"},
                             ingress=[rule(None, [port(80, "SCTP")])])),
         check(81, all_ingress(X_A, False))),
    case("should not allow access by TCP when a policy specifies only UDP", "x/a y/a",
         Apply(policy=policy("allow-only-udp-ingress-on-port-81", pods={"pod": "a"},
                             ingress=[rule(None, [port(81, "UDP")])])),
         check(81, all_ingress(X_A, False))),
    case("should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default "
         "ns label", "x/a x/b y/a z/a",
         Apply(policy=policy("allow-client-a-via-ns-selector-for-immutable-ns-label", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=in_ns("y"))])])),
         check(80, _e(X, X_A, False), _e(Z, X_A, False))),
    case("should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
         "x/a x/b y/a z/a",
         Apply(policy=policy("allow-ns-y-match-selector-for-immutable-ns-label", pods={"pod": "a"},
                             egress=[rule([peer(namespaces=expr(NS_LABEL, "NotIn", "y"))], to=True)])),
         check(80, _e(X_A, Y, False))),
    _deny_ingress("UDP"),
    _ports_81_from_y("UDP"),
    _ns_pod_from_y_a("UDP"),
    _deny_ingress("SCTP"),
    _ports_81_from_y("SCTP"),
    _ns_pod_from_y_a("SCTP"),
)

_FROM_X_B = policy("x-a-allows-pod-b", pods={"pod": "a"}, ingress=[rule([peer(pods=labels(pod="b"))])])

UPDATE_CASES: tuple[Case, ...] = (
    case("update: a policy's peers change, then its ports", "x/a x/b x/c",
         Apply(policy=_FROM_X_B), check(80, all_ingress(X_A, False), _e(X_B, X_A, True)),
         Apply(policy=policy("x-a-allows-pod-b", pods={"pod": "a"},
                             ingress=[rule([peer(pods=labels(pod="c"))])])),
         check(80, all_ingress(X_A, False), _e(X_C, X_A, True)),
         Apply(policy=policy("x-a-allows-pod-b", pods={"pod": "a"},
                             ingress=[rule([peer(pods=labels(pod="c"))], [port(81)])])),
         check(80, all_ingress(X_A, False)), check(81, all_ingress(X_A, False), _e(X_C, X_A, True)),
         source="vpccni"),
    case("update: one of two policies removed leaves the other in force", "x/a x/b y/a",
         Apply(policy=_FROM_X_B),
         Apply(policy=policy("x-a-allows-y", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=in_ns("y"))])])),
         check(80, all_ingress(X_A, False), _e(X_B, X_A, True), _e(Y, X_A, True)),
         DeletePolicy(namespace="x", name="x-a-allows-y"),
         check(80, all_ingress(X_A, False), _e(X_B, X_A, True)),
         source="vpccni"),
    case("update: a pod's labels stop matching the policy's podSelector", "x/a x/b y/a",
         Apply(policy=policy("deny-ingress-to-a", pods={"pod": "a"}, ingress=[])),
         check(80, all_ingress(X_A, False)),
         PodLabels(pod=X_A, labels={"pod": "renamed"}),
         check(80),
         source="vpccni"),
    case("update: a peer pod's labels stop matching", "x/a x/b",
         Apply(policy=_FROM_X_B), check(80, all_ingress(X_A, False), _e(X_B, X_A, True)),
         PodLabels(pod=X_B, labels={"pod": "other"}),
         check(80, all_ingress(X_A, False)),
         source="vpccni"),
    case("update: a namespace loses the label a namespaceSelector matched", "x/a y/a",
         NamespaceLabels(namespace="y", labels={"team": "blue"}),
         Apply(policy=policy("from-team-blue", pods={"pod": "a"},
                             ingress=[rule([peer(namespaces=labels(team="blue"))])])),
         check(80, all_ingress(X_A, False), _e(Y, X_A, True)),
         NamespaceLabels(namespace="y", labels={"team": None}),
         check(80, all_ingress(X_A, False)),
         source="vpccni"),
    case("update: a deleted peer's address given to a new pod the policy does not select", "x/a x/b",
         Apply(policy=_FROM_X_B), check(80, all_ingress(X_A, False), _e(X_B, X_A, True)),
         DeletePod(pod=X_B),
         RunPod(pod="x/d", labels={"pod": "d"}, reuse_ip_of=X_B),
         check(80, all_ingress(X_A, False)),
         source="vpccni"),
    case("update: a deleted egress destination's address given to a new pod", "x/a x/b",
         Apply(policy=policy("a-egress-to-b", pods={"pod": "a"},
                             egress=[rule([peer(pods=labels(pod="b"))], to=True)])),
         check(80, all_egress(X_A, False), _e(X_A, X_B, True)),
         DeletePod(pod=X_B),
         RunPod(pod="x/e", labels={"pod": "e"}, reuse_ip_of=X_B),
         check(80, all_egress(X_A, False)),
         source="vpccni"),
    case("update: a pod recreated with the same name and labels is selected again", "x/a x/b",
         Apply(policy=policy("deny-ingress-to-b", pods={"pod": "b"}, ingress=[])),
         check(80, all_ingress(X_B, False)),
         DeletePod(pod=X_B), RunPod(pod=X_B, node=1, labels={"pod": "b"}),
         check(80, all_ingress(X_B, False)),
         source="vpccni"),
    case("update: endPort opens a range, narrowing it closes the rest", "x/a y/a",
         Apply(policy=policy("range", pods={"pod": "a"}, ingress=[rule(None, [port(80, "TCP", 81)])])),
         check(80), check(81),
         Apply(policy=policy("range", pods={"pod": "a"}, ingress=[rule(None, [port(79, "TCP", 80)])])),
         check(80), check(81, all_ingress(X_A, False)),
         source="vpccni"),
    case("update: ipBlock ingress with except", "x/a x/b x/c",
         Apply(policy=policy("from-block", pods={"pod": "a"},
                             ingress=[rule([block("{net4:x/b}", "{ip:x/c}/32")])])),
         check(80, _e(X_C, X_A, False)),
         source="vpccni"),
)
# fmt: on

ALL_CASES: tuple[Case, ...] = E2E_CASES + UPDATE_CASES

_PLACEHOLDER = re.compile(r"\{(ip|net4):([a-z]+/[a-z]+)\}")


def fill_addresses(obj: Any, address_of: Callable[[str], str]) -> Any:
    """`obj` with `{ip:x/b}` replaced by pod x/b's address and `{net4:x/b}` by the /4 around it."""
    if isinstance(obj, dict):
        return {k: fill_addresses(v, address_of) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fill_addresses(v, address_of) for v in obj]
    if not isinstance(obj, str):
        return obj

    def fill(m: re.Match[str]) -> str:
        ip = address_of(m.group(2))
        return ip if m.group(1) == "ip" else str(ipaddress.ip_network(f"{ip}/4", strict=False))

    return _PLACEHOLDER.sub(fill, obj)
