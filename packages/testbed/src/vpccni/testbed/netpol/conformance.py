"""The conformance runner: namespaces x, y, z with pods a, b, c each (spread over the nodes), the cases of
`cases` run one after another on one `PolicyCluster`, every check judged with real connections.

A check passes when the packets agree with both the case's hand-written table (its port and protocol, over
its pods) and the API's semantics (`oracle`) on the whole matrix: every live pod pair, ports 80 and 81, TCP,
UDP (and SCTP where the kernel has it). After a change the runner first waits until every agent has in its
kernel table the policies that select each pod (read from the agents' introspection), then probes; a
mismatch is probed again until `settle_s` has passed since the change (a change of peers only shows in the
packets). Between cases every policy is deleted, labels and pods are put back, and the runner waits until no
agent enforces anything.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from vpccni.netpol.selectors import LabelSelector
from vpccni.testbed.netpol import oracle, truth
from vpccni.testbed.netpol import steps as st
from vpccni.testbed.netpol.cluster import PORTS, ClusterPod, PolicyCluster, container_ports
from vpccni.testbed.netpol.probe import Outcome

Key = tuple[str, str, int, str]


@dataclass
class CaseResult:
    name: str
    source: str
    passed: bool = True
    skipped: str = ""
    checks: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "source": self.source, "checks": self.checks,
                               "seconds": round(self.seconds, 2)}  # fmt: skip
        if self.skipped:
            out["skipped"] = self.skipped
        if self.failures:
            out["failures"] = self.failures
        return out


class ConformanceRun:
    def __init__(
        self,
        cluster: PolicyCluster,
        *,
        out: TextIO,
        settle_s: float = 15.0,
        probe_timeout_s: float = 1.0,
    ) -> None:
        self.pc = cluster
        self.out = out
        self.settle_s = settle_s
        self.probe_timeout_s = probe_timeout_s
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.pod_labels: dict[str, dict[str, str]] = {}
        self.ns_labels: dict[str, dict[str, str]] = {ns: {} for ns in st.NAMESPACES}
        self.home: dict[str, int] = {}  # pod -> node it runs on
        self.gone: dict[str, ipaddress.IPv4Address] = {}  # deleted pod -> its address

    # -- setup -----------------------------------------------------------------------------------------
    def setup(self) -> None:
        for ns in st.NAMESPACES:
            self.pc.create_namespace(ns)
        for i, label in enumerate(st.ALL_PODS):
            self._run(label, node=i % len(self.pc.runners), labels={"pod": label.split("/")[1]})

    def _run(self, label: str, *, node: int, labels: Mapping[str, str], want_ip: Any = None) -> ClusterPod:
        ns, name = label.split("/")
        pod = self.pc.run_pod(ns, name, node=node, labels=labels, want_ip=want_ip)
        self.pod_labels[label] = dict(labels)
        self.home[label] = node
        return pod

    # -- the expected world ----------------------------------------------------------------------------
    def world(self) -> oracle.World:
        ports = {(p["name"], p["protocol"]): p["containerPort"] for p in container_ports(self.pc.protocols)}
        pods = {
            label: oracle.OraclePod(
                namespace=pod.namespace,
                name=pod.name,
                ip=str(pod.ip),
                labels=self.pod_labels[label],
                named_ports=ports,
            )
            for label, pod in self.pc.pods.items()
        }
        return oracle.World(pods=pods, namespace_labels=self.ns_labels, policies=list(self.policies.values()))

    def selecting(self) -> dict[str, set[str]]:
        """pod -> the policies that select it, by the API's rules."""
        out: dict[str, set[str]] = {label: set() for label in self.pc.pods}
        for (ns, name), policy in self.policies.items():
            selector = LabelSelector.from_json(policy["spec"].get("podSelector") or {})
            for label in out:
                if label.startswith(f"{ns}/") and selector.matches(self.pod_labels[label]):
                    out[label].add(f"{ns}/{name}")
        return out

    def resolve(self, obj: Any) -> Any:
        """Fill in `{ip:x/b}` and `{net4:x/b}` from the live (or just deleted) pods."""

        def address_of(label: str) -> str:
            return str(self.pc.pods[label].ip if label in self.pc.pods else self.gone[label])

        return st.fill_addresses(obj, address_of)

    # -- steps -----------------------------------------------------------------------------------------
    def apply(self, step: st.Step) -> None:
        if isinstance(step, st.Apply):
            policy = self.resolve(step.policy)
            self.pc.apply_policy(policy)
            self.policies[(policy["metadata"]["namespace"], policy["metadata"]["name"])] = policy
        elif isinstance(step, st.DeletePolicies):
            self.pc.delete_all_policies()
            self.policies.clear()
        elif isinstance(step, st.DeletePolicy):
            self.pc.delete_policy(step.namespace, step.name)
            self.policies.pop((step.namespace, step.name), None)
        elif isinstance(step, st.PodLabels):
            self.pc.set_pod_labels(self.pc.pods[step.pod], step.labels)
            self.pod_labels[step.pod] = _merged(self.pod_labels[step.pod], step.labels)
        elif isinstance(step, st.NamespaceLabels):
            self.pc.set_namespace_labels(step.namespace, step.labels)
            self.ns_labels[step.namespace] = _merged(self.ns_labels[step.namespace], step.labels)
        elif isinstance(step, st.DeletePod):
            pod = self.pc.pods[step.pod]
            self.gone[step.pod] = pod.ip
            self.pc.delete_pod(pod)
            self.pod_labels.pop(step.pod, None)
        elif isinstance(step, st.RunPod):
            node = self.home.get(step.reuse_ip_of, step.node) if step.reuse_ip_of else step.node
            want = self.gone[step.reuse_ip_of] if step.reuse_ip_of else None
            self._run(
                step.pod, node=node, labels=step.labels or {"pod": step.pod.split("/")[1]}, want_ip=want
            )

    def wait_in_force(self, timeout_s: float) -> bool:
        """Until every agent has, for every pod, exactly the policies that select it."""
        want = self.selecting()
        return self.pc.wait_for(
            lambda: self.pc.policies_in_force() == want, timeout_s=timeout_s, interval_s=0.05
        )

    def check(self, case: st.Case, step: st.Check, since: float) -> list[str]:
        pods = [self.pc.pods[label] for label in sorted(self.pc.pods)]
        pairs = [(s, d) for s in pods for d in pods if s is not d]
        hand_pods = [p for p in case.pods if p in self.pc.pods]
        hand = truth.reachability(hand_pods, step.expect)
        world = self.world()
        while True:
            actual = self.pc.probe(pairs, ports=PORTS, timeout_s=self.probe_timeout_s)
            problems = self._compare(case, step, actual, hand, hand_pods, world)
            if not problems or time.monotonic() - since > self.settle_s:
                return problems

    def _compare(
        self,
        case: st.Case,
        step: st.Check,
        actual: Mapping[Key, Outcome],
        hand: Mapping[tuple[str, str], bool],
        hand_pods: list[str],
        world: oracle.World,
    ) -> list[str]:
        problems = []
        bad = sorted(k for k, o in actual.items() if o in (Outcome.REFUSED, Outcome.ERROR))
        if bad:
            problems.append(f"probes that neither connected nor timed out (setup fault): {bad[:5]}")
        got = {k: o is Outcome.CONNECTED for k, o in actual.items()}
        hand_got = {(s, d): got[(s, d, step.port, step.protocol)] for s, d in hand}
        if hand_got != hand:
            problems.append(
                f"{step.protocol}/{step.port} differs from the e2e truth table "
                "([cell] = what the packets did):\n" + truth.render(hand_pods, hand, hand_got)
            )
        wrong = [k for k in sorted(got) if got[k] != oracle.allowed(world, k[0], k[1], k[2], k[3])]
        if wrong:
            shown = ", ".join(f"{s}->{d} {proto}/{port} {'open' if got[(s, d, port, proto)] else 'blocked'}"
                              for s, d, port, proto in wrong[:8])  # fmt: skip
            problems.append(
                f"{len(wrong)} of {len(got)} connections differ from the API's semantics: {shown}"
            )
        return problems

    # -- cases -----------------------------------------------------------------------------------------
    def run_case(self, case: st.Case) -> CaseResult:
        result = CaseResult(name=case.name, source=case.source)
        if case.needs_sctp and "SCTP" not in {p.value for p in self.pc.protocols}:
            result.skipped = "this kernel has no SCTP"
            return result
        started = time.monotonic()
        since = started
        try:
            for step in case.steps:
                if isinstance(step, st.Check):
                    self.wait_in_force(self.settle_s)
                    problems = self.check(case, step, since)
                    result.checks += 1
                    if problems:
                        result.failures.extend(f"check {result.checks}: {p}" for p in problems)
                else:
                    self.apply(step)
                    since = time.monotonic()
        except Exception as exc:  # a step that cannot run fails the case, not the run
            result.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.reset()
        result.passed = not result.failures
        result.seconds = time.monotonic() - started
        return result

    def reset(self) -> None:
        """Back to the nine pods with their labels, no policy, nothing enforced."""
        if self.policies or self.pc.store.list("networkpolicies")[0]:
            self.pc.delete_all_policies()
            self.policies.clear()
        for ns, labels in self.ns_labels.items():
            if labels:
                self.pc.set_namespace_labels(ns, dict.fromkeys(labels))
                self.ns_labels[ns] = {}
        for label in list(self.pc.pods):
            if label not in st.ALL_PODS:
                self.pc.delete_pod(self.pc.pods[label])
                self.pod_labels.pop(label, None)
        for i, label in enumerate(st.ALL_PODS):
            default = {"pod": label.split("/")[1]}
            if label not in self.pc.pods:
                self._run(label, node=self.home.get(label, i % len(self.pc.runners)), labels=default)
            elif self.pod_labels[label] != default:
                self.pc.set_pod_labels(self.pc.pods[label], _patch_of(self.pod_labels[label], default))
                self.pod_labels[label] = default
        self.gone.clear()
        if not self.wait_in_force(self.settle_s):
            raise RuntimeError("the agents still enforce policies after every policy was deleted")

    def run(
        self, selected: Iterable[st.Case], *, on_result: Callable[[CaseResult], None] | None = None
    ) -> list[CaseResult]:
        results = []
        for case in selected:
            result = self.run_case(case)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results


def _merged(labels: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    out = dict(labels)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _patch_of(current: Mapping[str, str], wanted: Mapping[str, str | None]) -> dict[str, str | None]:
    """A merge patch that turns `current` into `wanted` (keys missing from `wanted` are removed)."""
    patch: dict[str, str | None] = {k: None for k in current if k not in wanted}
    patch.update(wanted)
    return patch
