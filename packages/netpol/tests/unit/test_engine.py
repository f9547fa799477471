"""The agent's engine with fake kernel table and conntrack: admissions, restarts, strict and standard mode."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from vpccni.k8sapi.manifests import pod_from_manifest
from vpccni.netpol import policyendpoint
from vpccni.netpol.agent.conntrack import ConntrackJanitor
from vpccni.netpol.agent.effective import Isolation
from vpccni.netpol.agent.engine import EngineSettings, PolicyEngine
from vpccni.netpol.agent.ruleset import DROP
from vpccni.netpol.kube import ObjectCache
from vpccni.netpol.model import Direction
from vpccni.netpol.settings import EnforcingMode
from vpccni.netpol.testing import FakeConntrack, FakeInterfaces, FakePolicyTables
from vpccni.networkutils.names import host_veth_name


def pod(name: str, ip: str = "", ns: str = "x", **labels: str) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running"}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {"metadata": {"namespace": ns, "name": name, "labels": labels or {"pod": name}}, "status": status}


def pe(name: str, spec: dict[str, Any], ns: str = "x") -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": f"{name}-1"},
        "spec": {"policyRef": {"name": name, "namespace": ns}, **spec},
    }


DENY_A = pe("deny-a", {"podSelector": {"matchLabels": {"pod": "a"}}, "podIsolation": ["Ingress"]})


class Agent:
    def __init__(
        self, *, mode: EnforcingMode = EnforcingMode.STANDARD, tables: FakePolicyTables | None = None
    ) -> None:
        self.tables = tables or FakePolicyTables()
        self.conntrack = FakeConntrack()
        self.interfaces = FakeInterfaces()
        self.pods = ObjectCache(pod_from_manifest)
        self.pes = ObjectCache(policyendpoint.from_json)
        self.engine = PolicyEngine(
            tables=self.tables, pods=self.pods, policy_endpoints=self.pes, conntrack=self.conntrack,
            interfaces=self.interfaces, settings=EngineSettings(mode=mode, enforce_timeout_s=5.0),
        )  # fmt: skip

    def sync(self, pods: list[dict[str, Any]], pes: list[dict[str, Any]]) -> None:
        self.pods.replace_all(pods, resource_version="1")
        self.pes.replace_all(pes, resource_version="1")

    def settle(self) -> None:
        assert self.engine.wait_applied(self.engine.changed(), 5.0)

    def verdict(self, direction: Direction, name: str) -> str | None:
        assert self.tables.ruleset is not None
        return self.tables.ruleset.verdict(direction, host_veth_name("x", name))


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    a.engine.start()
    yield a
    a.engine.stop()


def test_nothing_is_written_before_both_caches_are_synced(agent: Agent) -> None:
    agent.pods.replace_all([pod("a")], resource_version="1")
    agent.engine.changed()
    assert not agent.engine.wait_applied(1, 0.3) and agent.tables.writes == 0
    agent.pes.replace_all([DENY_A], resource_version="1")
    agent.settle()
    assert agent.verdict(Direction.INGRESS, "a") == DROP and agent.tables.writes == 1


def test_standard_mode_opens_unselected_pods_and_follows_labels(agent: Agent) -> None:
    agent.sync([pod("a"), pod("b")], [DENY_A])
    agent.settle()
    assert agent.verdict(Direction.INGRESS, "a") == DROP and agent.verdict(Direction.INGRESS, "b") is None
    agent.pods.upsert(pod("a", pod="renamed"), resource_version="2")
    agent.settle()
    assert agent.verdict(Direction.INGRESS, "a") is None
    policy = agent.engine.policy_of("x", "a")
    assert policy is not None and policy.ingress.isolation is Isolation.OPEN


def test_enforce_returns_once_the_pods_rules_are_written(agent: Agent) -> None:
    agent.sync([], [DENY_A])
    agent.settle()
    agent.pods.upsert(pod("a"), resource_version="2")
    assert agent.engine.enforce("x", "a", strict=False)
    assert agent.verdict(Direction.INGRESS, "a") == DROP


def test_strict_pods_are_denied_until_a_policy_selects_them() -> None:
    a = Agent(mode=EnforcingMode.STRICT)
    a.engine.start()
    try:
        a.sync([pod("a"), pod("c")], [])
        a.settle()
        assert a.verdict(Direction.INGRESS, "c") is None  # not admitted through the CNI: left open
        assert a.engine.enforce("x", "c")
        assert a.verdict(Direction.INGRESS, "c") == DROP and a.verdict(Direction.EGRESS, "c") == DROP
        assert a.tables.strict_pods() == {host_veth_name("x", "c")}
        allow = pe("allow-c", {"podSelector": {"matchLabels": {"pod": "c"}}, "podIsolation": ["Egress"],
                               "egress": [{"cidr": "10.0.0.0/8"}]})  # fmt: skip
        a.pes.upsert(allow, resource_version="2")
        a.settle()
        assert a.verdict(Direction.INGRESS, "c") is None  # selected now: only Egress is isolated
        assert a.verdict(Direction.EGRESS, "c") not in (None, DROP)
    finally:
        a.engine.stop()


def test_a_strict_admission_before_the_caches_sync_only_adds_that_pods_drops() -> None:
    table = FakePolicyTables()
    first = Agent(mode=EnforcingMode.STRICT, tables=table)
    first.engine.start()
    first.sync([pod("a"), pod("b")], [DENY_A])
    first.settle()
    first.engine.stop()
    # A new agent: the kernel keeps the old table until the new one has seen everything.
    second = Agent(mode=EnforcingMode.STRICT, tables=table)
    second.engine.start()
    try:
        assert second.engine.enforce("x", "new")
        assert table.ruleset is not None and table.writes == 1
        assert second.verdict(Direction.INGRESS, "a") == DROP  # the old rules still stand
        assert second.verdict(Direction.INGRESS, "new") == DROP == second.verdict(Direction.EGRESS, "new")
        second.sync([pod("a"), pod("b"), pod("new")], [DENY_A])
        second.settle()
        assert second.verdict(Direction.EGRESS, "new") == DROP  # still strict: read back from the kernel
        assert second.verdict(Direction.INGRESS, "b") is None
    finally:
        second.engine.stop()


def test_an_admitted_pod_the_watch_has_not_shown_yet_stays_denied_in_strict_mode(agent: Agent) -> None:
    agent.sync([], [])
    agent.settle()
    done = threading.Event()
    threading.Thread(
        target=lambda: (agent.engine.enforce("x", "late", strict=True), done.set()), daemon=True
    ).start()
    assert done.wait(5)
    assert agent.verdict(Direction.INGRESS, "late") == DROP
    agent.engine.forget("x", "late")
    agent.settle()
    assert agent.verdict(Direction.INGRESS, "late") is None


def test_addresses_that_leave_the_node_lose_their_conntrack_entries(agent: Agent) -> None:
    agent.sync([pod("a", "10.0.0.5"), pod("b", "10.0.0.6")], [])
    agent.settle()
    agent.pods.remove(pod("b"), resource_version="2")
    agent.pods.upsert(pod("a", "10.0.0.7"), resource_version="3")
    agent.settle()
    assert agent.engine.drain_conntrack(5)
    assert sorted(agent.conntrack.forgotten) == ["10.0.0.5", "10.0.0.6"]


def test_a_failed_write_keeps_the_old_table_and_is_retried(agent: Agent) -> None:
    agent.sync([pod("a")], [])
    agent.settle()
    agent.tables.fail_with = RuntimeError("nft: Operation not permitted")
    agent.pes.upsert(DENY_A, resource_version="2")
    assert not agent.engine.wait_applied(agent.engine.changed(), 0.5)
    assert "not permitted" in agent.engine.last_error and agent.verdict(Direction.INGRESS, "a") is None
    agent.tables.fail_with = None
    agent.settle()
    assert agent.verdict(Direction.INGRESS, "a") == DROP and agent.engine.last_error == ""


def test_a_peer_address_a_rule_no_longer_allows_loses_its_conntrack_entries(agent: Agent) -> None:
    from_b = pe("from-b", {"podSelector": {"matchLabels": {"pod": "a"}}, "podIsolation": ["Ingress"],
                           "ingress": [{"cidr": "10.0.0.6"}, {"cidr": "10.1.0.0/16"}]})  # fmt: skip
    agent.sync([pod("a", "10.0.0.5")], [from_b])
    agent.settle()
    assert agent.conntrack.forgotten == []
    closed = pe("from-b", {"podSelector": {"matchLabels": {"pod": "a"}}, "podIsolation": ["Ingress"]})
    agent.pes.upsert(closed,
                     resource_version="2")  # fmt: skip
    agent.settle()
    assert agent.engine.drain_conntrack(5)
    assert agent.conntrack.forgotten == ["10.0.0.6"]


def test_a_veth_ipamd_named_after_the_attachment_is_found_by_its_route(agent: Agent) -> None:
    agent.interfaces.routes = {
        "10.0.0.5": "eniattach00001",  # a's second sandbox: not the upstream name
        "10.0.0.6": host_veth_name("x", "b"),
        "10.0.0.7": host_veth_name("x", "b"),  # an address reused by b while old pod c still shows it
    }
    agent.sync([pod("a", "10.0.0.5"), pod("b", "10.0.0.6"), pod("c", "10.0.0.7")], [DENY_A])
    agent.settle()
    assert agent.tables.ruleset is not None
    assert agent.tables.ruleset.ingress == {host_veth_name("x", "a"): DROP, "eniattach00001": DROP}
    assert agent.verdict(Direction.INGRESS, "b") is None


def test_a_mass_removal_of_peers_leaves_their_entries_to_expire_but_never_a_local_pods() -> None:
    conntrack = FakeConntrack()
    janitor = ConntrackJanitor(conntrack, peer_cap=3)
    janitor.start()
    try:
        janitor.submit(pods=["10.0.0.1"], peers=[f"172.16.0.{i}" for i in range(10)])
        janitor.submit(pods=[], peers=["10.0.0.9", "10.0.0.1"])
        assert janitor.drain(5)
        assert conntrack.forgotten == ["10.0.0.1", "10.0.0.9"]
    finally:
        janitor.stop()
