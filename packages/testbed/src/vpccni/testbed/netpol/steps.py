"""What a conformance case is: its pods, and the steps it runs (apply or delete policies, relabel pods and
namespaces, delete and run pods, check connectivity). Addresses in a step's policy are placeholders resolved
when the step runs: `{ip:x/b}` is pod x/b's address, `{net4:x/b}` the /4 around it (`fill_addresses`)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vpccni.testbed.netpol.policy_builders import Json
from vpccni.testbed.netpol.truth import Expect

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
ALL_PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in POD_NAMES)


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
