"""The testbed API server's store: resourceVersions, selectors, patches, history and 410."""

from __future__ import annotations

import pytest
from vpccni.testbed.kube import CNINODES, NODES, PODS, ObjectStore
from vpccni.testbed.kube.patches import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from vpccni.testbed.kube.selectors import SelectorError, parse_field_selector, parse_label_selector
from vpccni.testbed.kube.store import (
    AlreadyExistsError,
    ConflictError,
    ExpiredError,
    NotFoundError,
    UnsupportedMediaTypeError,
)


def pod(name: str, node: str, ns: str = "default", **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": {"nodeName": node}}


def never() -> bool:
    return False


def test_resource_versions_increase_across_resources_and_writes() -> None:
    store = ObjectStore()
    a = store.create(PODS, pod("a", "n1"))
    n = store.create(NODES, {"metadata": {"name": "n1"}})
    b = store.patch(PODS, "a", {"metadata": {"labels": {"x": "1"}}}, namespace="default")
    versions = [int(a["metadata"]["resourceVersion"]), int(n["metadata"]["resourceVersion"])]
    versions.append(int(b["metadata"]["resourceVersion"]))
    assert versions == [1, 2, 3]
    assert store.resource_version == 3
    assert b["metadata"]["uid"] == a["metadata"]["uid"]
    assert b["apiVersion"] == "v1" and b["kind"] == "Pod"


def test_create_twice_is_already_exists_and_missing_is_not_found() -> None:
    store = ObjectStore()
    store.create(NODES, {"metadata": {"name": "n1"}})
    with pytest.raises(AlreadyExistsError):
        store.create(NODES, {"metadata": {"name": "n1"}})
    with pytest.raises(NotFoundError):
        store.get(NODES, "n2")
    with pytest.raises(NotFoundError):
        store.delete(PODS, "nope", "default")


def test_generate_name_gives_unique_names() -> None:
    store = ObjectStore()
    first = store.create("events", {"metadata": {"generateName": "aws-node-x.", "namespace": "kube-system"}})
    second = store.create("events", {"metadata": {"generateName": "aws-node-x.", "namespace": "kube-system"}})
    assert first["metadata"]["name"].startswith("aws-node-x.")
    assert first["metadata"]["name"] != second["metadata"]["name"]


def test_list_by_field_and_label_selectors() -> None:
    store = ObjectStore()
    store.create(PODS, pod("a", "n1", app="web"))
    store.create(PODS, pod("b", "n2", app="web"))
    store.create(PODS, pod("c", "n1", ns="kube-system", app="dns"))
    names = lambda items: [i["metadata"]["name"] for i in items]  # noqa: E731
    items, rv = store.list(PODS, field_selector="spec.nodeName=n1")
    assert names(items) == ["a", "c"] and rv == 3
    assert names(store.list(PODS, "kube-system")[0]) == ["c"]
    assert names(store.list(PODS, label_selector="app in (web),app!=dns")[0]) == ["a", "b"]
    assert names(store.list(PODS, field_selector="metadata.name=b")[0]) == ["b"]
    assert names(store.list(PODS, field_selector="spec.nodeName!=n1,metadata.namespace=default")[0]) == ["b"]


def test_label_selector_grammar() -> None:
    sel = parse_label_selector("a=1,b!=2,c in (x, y),d notin (z),e,!f")
    assert sel.matches({"a": "1", "c": "y", "e": ""})
    assert not sel.matches({"a": "1", "c": "y", "e": "", "f": "1"})
    assert not sel.matches({"a": "1", "b": "2", "c": "x", "e": ""})
    assert not sel.matches({"a": "1", "c": "q", "e": ""})
    assert parse_field_selector("spec.nodeName==n1").matches({"spec.nodeName": "n1"})
    with pytest.raises(SelectorError):
        parse_field_selector("spec.nodeName in (a)")


def test_patches() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    containers = [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]
    merged = strategic_merge_patch(
        {"spec": {"containers": containers}},
        {"spec": {"containers": [{"name": "b", "image": "2"}, {"name": "a", "$patch": "delete"}]}},
    )
    assert merged == {"spec": {"containers": [{"name": "b", "image": "2"}]}}
    doc = json_patch(
        {"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}, {"op": "replace", "path": "/b", "value": 3}]
    )
    assert doc == {"a": [1, 2], "b": 3}


def test_patch_with_stale_resource_version_conflicts() -> None:
    store = ObjectStore()
    created = store.create(CNINODES, {"metadata": {"name": "n1"}, "spec": {}})
    rv = created["metadata"]["resourceVersion"]
    store.patch(CNINODES, "n1", {"metadata": {"resourceVersion": rv}, "spec": {"features": [{"name": "A"}]}})
    with pytest.raises(ConflictError):
        store.patch(CNINODES, "n1", {"metadata": {"resourceVersion": rv}, "spec": {"features": []}})
    assert store.get(CNINODES, "n1")["spec"]["features"] == [{"name": "A"}]
    assert store.get(CNINODES, "n1")["metadata"]["generation"] == 2


def test_strategic_merge_on_custom_resource_is_rejected_like_a_real_server() -> None:
    store = ObjectStore()
    store.create(CNINODES, {"metadata": {"name": "n1"}})
    with pytest.raises(UnsupportedMediaTypeError):
        store.patch(CNINODES, "n1", {"spec": {}}, content_type=STRATEGIC_MERGE_PATCH)
    store.create(NODES, {"metadata": {"name": "n1"}})
    node = store.patch(
        NODES, "n1", [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}], content_type=JSON_PATCH
    )
    assert node["metadata"]["labels"] == {"a": "b"}
    assert store.patch(NODES, "n1", {"spec": {"unschedulable": True}}, content_type=MERGE_PATCH)["spec"]


def test_events_after_returns_history_in_order() -> None:
    store = ObjectStore()
    store.create(PODS, pod("a", "n1"))
    start = store.resource_version
    store.patch(PODS, "a", {"metadata": {"labels": {"x": "1"}}}, namespace="default")
    store.delete(PODS, "a", "default")
    events = store.events_after(start, timeout=0, wake=never)
    assert [(e.type, e.resource_version) for e in events] == [("MODIFIED", 2), ("DELETED", 3)]


def test_bounded_history_expires_old_resource_versions() -> None:
    store = ObjectStore(history_limit=3)
    for i in range(5):
        store.create(NODES, {"metadata": {"name": f"n{i}"}})
    # Events 1 and 2 were dropped: a watcher at RV 1 missed event 2 → 410; one at RV 2 missed nothing.
    with pytest.raises(ExpiredError):
        store.events_after(1, timeout=0, wake=never)
    assert [e.resource_version for e in store.events_after(2, timeout=0, wake=never)] == [3, 4, 5]
    store.compact()
    with pytest.raises(ExpiredError):
        store.events_after(4, timeout=0, wake=never)
    assert store.events_after(5, timeout=0, wake=never) == []


def test_watch_filter_turns_leaving_the_selection_into_deleted() -> None:
    store = ObjectStore()
    store.create(PODS, pod("a", "n1", app="web"))
    start = store.resource_version
    store.patch(PODS, "a", {"metadata": {"labels": {"app": "db"}}}, namespace="default")
    store.patch(PODS, "a", {"metadata": {"labels": {"app": "web"}}}, namespace="default")
    wf = store.watch_filter(PODS, label_selector="app=web")
    seen = [wf.translate(e) for e in store.events_after(start, timeout=0, wake=never)]
    assert [s[0] for s in seen if s] == ["DELETED", "ADDED"]
    other = store.watch_filter(NODES)
    assert all(other.translate(e) is None for e in store.events_after(0, timeout=0, wake=never))
