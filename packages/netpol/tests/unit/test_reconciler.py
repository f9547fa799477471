"""The controller's reconcile rounds against a stateful fake of the API's PolicyEndpoint writes."""

from __future__ import annotations

from typing import Any

from vpccni.netpol import policyendpoint
from vpccni.netpol.controller.cluster import namespace_from_json, pod_from_json
from vpccni.netpol.controller.reconciler import InvalidPolicy, PolicyEndpointReconciler, parse_policy
from vpccni.netpol.kube import ObjectCache
from vpccni.netpol.settings import ControllerSettings
from vpccni.netpol.testing import FakePolicyEndpointWriter


def pod(ns: str, name: str, ip: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels or {"pod": name}},
            "status": {"phase": "Running", "podIP": ip}}  # fmt: skip


def policy(name: str, spec: dict[str, Any], ns: str = "x", uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "uid": uid, "resourceVersion": "1"}, "spec": spec}


class World:
    def __init__(self) -> None:
        self.policies = ObjectCache(parse_policy)
        self.pods = ObjectCache(pod_from_json)
        self.namespaces = ObjectCache(namespace_from_json)
        self.endpoints = ObjectCache(policyendpoint.from_json)
        self.writer = FakePolicyEndpointWriter()
        self.rec = PolicyEndpointReconciler(
            policies=self.policies, pods=self.pods, namespaces=self.namespaces, endpoints=self.endpoints,
            writer=self.writer, settings=ControllerSettings(chunk_size=2),
        )  # fmt: skip
        self.policies.listen(self.rec.on_policies)
        self.pods.listen(self.rec.on_pods)
        self.namespaces.listen(self.rec.on_namespaces)
        self.endpoints.listen(self.rec.on_endpoints)
        for cache in (self.policies, self.pods, self.namespaces, self.endpoints):
            cache.replace_all([], resource_version="1")
        self.namespaces.replace_all([{"metadata": {"name": n}} for n in ("x", "y")], resource_version="1")

    def round(self) -> set[tuple[str, str]]:
        dirty = set(self.rec._dirty)
        self.rec._dirty.clear()
        return self.rec.reconcile(dirty)

    def specs(self) -> dict[str, dict[str, Any]]:
        return {name: obj["spec"] for (_, name), obj in sorted(self.writer.objects.items())}


def test_policies_become_policy_endpoints_and_follow_pod_changes() -> None:
    w = World()
    w.pods.replace_all([pod("x", "a", "10.0.0.1"), pod("x", "b", "10.0.0.2")], resource_version="2")
    w.policies.replace_all(
        [
            policy(
                "from-b",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                },
            )
        ],
        resource_version="3",
    )
    assert w.round() == set()
    [(name, spec)] = w.specs().items()
    assert spec["ingress"] == [{"cidr": "10.0.0.2"}] and spec["podIsolation"] == ["Ingress"]
    obj = w.writer.objects[("x", name)]
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "NetworkPolicy"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "u1"
    # b's address changes: only its policy is marked, and the spec is replaced in place.
    w.pods.upsert(pod("x", "b", "10.0.0.9"), resource_version="4")
    assert w.rec._dirty == {("x", "from-b")}
    w.round()
    assert w.specs()[name]["ingress"] == [{"cidr": "10.0.0.9"}]
    assert [c[0] for c in w.writer.calls] == ["create", "replace"]
    # Nothing changed: a round writes nothing.
    w.rec.mark([("x", "from-b")])
    w.round()
    assert len(w.writer.calls) == 2


def test_chunks_come_and_go_and_a_deleted_policy_takes_its_endpoints() -> None:
    w = World()
    w.pods.replace_all([pod("x", n, f"10.0.0.{i + 1}") for i, n in enumerate("abcde")], resource_version="2")
    w.policies.replace_all(
        [policy("all", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})],
        resource_version="3",
    )
    w.round()
    assert len(w.specs()) == 3  # 5 peers, chunks of 2
    w.pods.replace_all([pod("x", n, f"10.0.0.{i + 1}") for i, n in enumerate("ab")], resource_version="5")
    w.round()
    assert len(w.specs()) == 1
    w.policies.replace_all([], resource_version="6")
    w.round()
    assert w.writer.objects == {}


def test_a_namespace_label_change_reaches_policies_with_namespace_selectors_only() -> None:
    w = World()
    w.pods.replace_all([pod("x", "a", "10.0.0.1"), pod("y", "a", "10.0.1.1")], resource_version="2")
    w.policies.replace_all(
        [
            policy(
                "blue",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}],
                },
            ),
            policy("local", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}, uid="u2"),
        ],
        resource_version="3",
    )
    w.round()
    w.namespaces.upsert(
        {"metadata": {"name": "y", "labels": {"team": "blue"}, "resourceVersion": "9"}}, resource_version="9"
    )
    assert w.rec._dirty == {("x", "blue")}
    w.round()
    blue = next(s for n, s in w.specs().items() if n.startswith("blue-"))
    assert blue["ingress"] == [{"cidr": "10.0.1.1"}]


def test_api_failures_are_retried_and_someone_elses_edit_is_undone() -> None:
    w = World()
    w.pods.replace_all([pod("x", "a", "10.0.0.1")], resource_version="2")
    w.policies.replace_all([policy("deny", {"podSelector": {}})], resource_version="3")
    w.writer.unavailable = True
    assert w.round() == {("x", "deny")}
    w.writer.unavailable = False
    w.rec.mark([("x", "deny")])
    assert w.round() == set()
    [(name, spec)] = w.specs().items()
    edited = dict(w.writer.objects[("x", name)], spec={**spec, "ingress": [{"cidr": "0.0.0.0/0"}]})
    edited["metadata"] = dict(edited["metadata"], resourceVersion="999")
    w.endpoints.upsert(edited, resource_version="999")
    w.round()
    assert "ingress" not in w.specs()[name]


def test_an_object_created_earlier_whose_event_is_late_is_replaced_not_duplicated() -> None:
    w = World()
    w.policies.replace_all([policy("deny", {"podSelector": {}})], resource_version="3")
    w.round()
    [key] = w.writer.objects
    w.endpoints.drop(key)  # as if the cache had not seen our create yet
    w.rec.mark([("x", "deny")])
    w.round()
    assert [c[0] for c in w.writer.calls] == ["create", "create", "replace"] and len(w.writer.objects) == 1


def test_an_invalid_policy_is_reported_and_its_endpoints_left_alone() -> None:
    bad = parse_policy(policy("bad", {"ingress": [{"from": [{}]}]}))
    assert isinstance(bad, InvalidPolicy) and "needs podSelector" in bad.reason
    w = World()
    w.policies.replace_all([policy("bad", {"ingress": [{"from": [{}]}]})], resource_version="3")
    assert w.round() == set() and w.writer.calls == []
