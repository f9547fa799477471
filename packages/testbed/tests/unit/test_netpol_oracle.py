"""The conformance suite's oracle (the API's semantics from raw NetworkPolicies) against the Kubernetes e2e
suite's hand-written truth tables: every check of every case, replayed without a cluster."""

from __future__ import annotations

from typing import Any

import pytest
from vpccni.testbed.netpol import cases, oracle, truth
from vpccni.testbed.netpol import steps as st
from vpccni.testbed.netpol.cluster import container_ports
from vpccni.testbed.netpol.probe import Proto

PORTS = {
    (p["name"], p["protocol"]): p["containerPort"]
    for p in container_ports([Proto.TCP, Proto.UDP, Proto.SCTP])
}


class Replay:
    """A cluster in a dict: pods with addresses 10.0.0.10.., labels, namespace labels, policies."""

    def __init__(self) -> None:
        self.pods = {label: {"ip": f"10.0.0.{10 + i}", "labels": {"pod": label.split("/")[1]}}
                     for i, label in enumerate(st.ALL_PODS)}  # fmt: skip
        self.gone: dict[str, str] = {}
        self.ns_labels: dict[str, dict[str, str]] = {ns: {} for ns in st.NAMESPACES}
        self.policies: dict[tuple[str, str], Any] = {}

    def resolve(self, obj: Any) -> Any:
        return st.fill_addresses(
            obj, lambda pod: self.pods[pod]["ip"] if pod in self.pods else self.gone[pod]
        )

    def step(self, step: st.Step) -> None:
        if isinstance(step, st.Apply):
            p = self.resolve(step.policy)
            self.policies[(p["metadata"]["namespace"], p["metadata"]["name"])] = p
        elif isinstance(step, st.DeletePolicies):
            self.policies.clear()
        elif isinstance(step, st.DeletePolicy):
            del self.policies[(step.namespace, step.name)]
        elif isinstance(step, st.PodLabels):
            self.pods[step.pod]["labels"].update(step.labels)
        elif isinstance(step, st.NamespaceLabels):
            labels = self.ns_labels[step.namespace]
            for k, v in step.labels.items():
                labels.pop(k, None) if v is None else labels.__setitem__(k, v)
        elif isinstance(step, st.DeletePod):
            self.gone[step.pod] = self.pods.pop(step.pod)["ip"]
        elif isinstance(step, st.RunPod):
            ip = self.gone[step.reuse_ip_of] if step.reuse_ip_of else "10.0.0.99"
            self.pods[step.pod] = {"ip": ip, "labels": dict(step.labels)}

    def world(self) -> oracle.World:
        pods = {
            label: oracle.OraclePod(
                namespace=label.split("/")[0],
                name=label.split("/")[1],
                ip=p["ip"],
                labels=p["labels"],
                named_ports=PORTS,
            )
            for label, p in self.pods.items()
        }
        return oracle.World(pods=pods, namespace_labels=self.ns_labels, policies=list(self.policies.values()))


@pytest.mark.parametrize("case", cases.ALL_CASES, ids=lambda case: case.name[:70])
def test_the_oracle_agrees_with_every_hand_written_truth_table(case: st.Case) -> None:
    replay = Replay()
    checks = 0
    for step in case.steps:
        if not isinstance(step, st.Check):
            replay.step(step)
            continue
        checks += 1
        pods = [p for p in case.pods if p in replay.pods]
        want = truth.reachability(pods, step.expect)
        world = replay.world()
        got = {(s, d): oracle.allowed(world, s, d, step.port, step.protocol) for s, d in want}
        assert got == want, f"check {checks}:\n{truth.render(pods, want, got)}"
    assert checks >= 1


def test_the_suite_holds_every_upstream_case_once() -> None:
    names = [case.name for case in cases.E2E_CASES]
    assert len(names) == len(set(names)) == 48
    assert {case.source for case in cases.UPDATE_CASES} == {"vpccni"}


def test_truth_table_patterns_and_rendering() -> None:
    pods = ["x/a", "x/b", "y/a"]
    table = truth.reachability(
        pods, [truth.all_ingress("x/a", False), truth.Expect(src="x/b", dst="x/a", allowed=True)]
    )
    assert table == {("x/a", "x/b"): True, ("x/a", "y/a"): True, ("x/b", "x/a"): True, ("x/b", "y/a"): True,
                     ("y/a", "x/a"): False, ("y/a", "x/b"): True}  # fmt: skip
    shown = truth.render(pods, table, {**table, ("y/a", "x/a"): True})
    assert shown.splitlines()[3] == "y/a [.]   .   -"
