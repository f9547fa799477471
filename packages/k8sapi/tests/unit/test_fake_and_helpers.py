"""The fake KubeApi, and the helpers built on the protocol (CNINode features, the connectivity probe)."""

from __future__ import annotations

import itertools
from types import MappingProxyType

import pytest
from vpccni.k8sapi import (
    ApiUnavailable,
    CniNodeFeature,
    Conflict,
    EniConfig,
    EventType,
    Forbidden,
    NodeInfo,
    NotFound,
    PodInfo,
    ReconnectBackoff,
    ensure_cninode_features,
    merged_features,
    wait_until_reachable,
)
from vpccni.k8sapi.testing import FakeKubeApi, RecordedEvent

SGP = CniNodeFeature(name="SecurityGroupsForPods")


def test_get_node_and_eniconfig_with_typed_errors() -> None:
    api = FakeKubeApi(node_name="n1")
    with pytest.raises(NotFound):
        api.get_node()
    api.put_node(NodeInfo(name="n1", max_pods=29))
    api.put_eniconfig(EniConfig(name="az1", subnet="subnet-1"))
    assert api.get_node().max_pods == 29
    assert api.get_eniconfig("az1").subnet == "subnet-1"
    with pytest.raises(NotFound):
        api.get_eniconfig("az2")
    api.set_available(False)
    with pytest.raises(ApiUnavailable):
        api.get_node()


def test_merged_features_adds_and_replaces_by_name() -> None:
    current = (SGP, CniNodeFeature(name="CustomNetworking", value="old"))
    wanted = (CniNodeFeature(name="CustomNetworking", value="new"), CniNodeFeature(name="Other"))
    assert merged_features(current, wanted) == (SGP, wanted[0], wanted[1])
    assert merged_features(current, (SGP,)) == current


def test_ensure_cninode_features_says_who_creates_cninodes_when_creating_is_forbidden() -> None:
    api = FakeKubeApi(node_name="n1")

    def forbidden(features):  # type: ignore[no-untyped-def]
        raise Forbidden("cninodes.vpcresources.k8s.aws is forbidden: cannot create", status=403)

    api.create_cninode = forbidden  # type: ignore[method-assign]
    with pytest.raises(Forbidden, match="VPC resource controller creates a CNINode per node"):
        ensure_cninode_features(api, [SGP])


def test_ensure_cninode_features_creates_then_merges_and_survives_a_race() -> None:
    api = FakeKubeApi(node_name="n1")
    assert ensure_cninode_features(api, [SGP]).features == (SGP,)
    custom = CniNodeFeature(name="CustomNetworking", value="az1")

    # The resource controller changes the object between our read and our patch, once.
    original_get = api.get_cninode
    raced = itertools.count()

    def racing_get():  # type: ignore[no-untyped-def]
        node = original_get()
        if next(raced) == 0:
            api.modify_cninode_externally([*node.features, CniNodeFeature(name="FromController")])
        return node

    api.get_cninode = racing_get  # type: ignore[method-assign]
    result = ensure_cninode_features(api, [custom])
    assert [f.name for f in result.features] == [
        "SecurityGroupsForPods",
        "FromController",
        "CustomNetworking",
    ]
    assert api.calls.count("patch_cninode_features") == 2  # one Conflict, one success
    unchanged = ensure_cninode_features(api, [custom])
    assert unchanged == result


def test_ensure_cninode_features_gives_up_with_conflict() -> None:
    api = FakeKubeApi(node_name="n1")
    api.modify_cninode_externally([])
    original_get = api.get_cninode

    def always_racing():  # type: ignore[no-untyped-def]
        node = original_get()
        api.modify_cninode_externally(node.features)
        return node

    api.get_cninode = always_racing  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        ensure_cninode_features(api, [SGP], attempts=3)


def test_events_and_pod_annotations() -> None:
    api = FakeKubeApi(node_name="n1", pod_name="aws-node-1")
    api.emit_event(reason="MissingIAMPermissions", message="no ec2:CreateNetworkInterface")
    assert api.events == [
        RecordedEvent(
            namespace="kube-system",
            pod_name="aws-node-1",
            reason="MissingIAMPermissions",
            message="no ec2:CreateNetworkInterface",
            type=EventType.WARNING,
        )
    ]
    api.start()
    api.put_pod(PodInfo(namespace="default", name="web", node_name="n1"))
    api.annotate_pod(namespace="default", name="web", annotations={"vpc.amazonaws.com/pod-ips": "10.0.0.9"})
    assert api.pods.get("default", "web").annotations == {"vpc.amazonaws.com/pod-ips": "10.0.0.9"}  # type: ignore[union-attr]
    stale = "1"
    with pytest.raises(Conflict):
        api.annotate_pod(namespace="default", name="web", annotations={"x": None}, resource_version=stale)
    with pytest.raises(NotFound):
        api.annotate_pod(namespace="default", name="gone", annotations={"x": "y"})


def test_pod_cache_catches_up_after_an_outage() -> None:
    api = FakeKubeApi(node_name="n1")
    api.start()
    api.put_pod(PodInfo(namespace="a", name="p1", annotations=MappingProxyType({})))
    assert api.pods.synced and [p.name for p in api.pods.list()] == ["p1"]
    api.set_available(False)
    api.put_pod(PodInfo(namespace="a", name="p2"))
    api.delete_pod("a", "p1")
    assert [p.name for p in api.pods.list()] == ["p1"]  # stale but still served
    api.set_available(True)
    assert [p.name for p in api.pods.list()] == ["p2"]


def test_probe_waits_then_succeeds_or_gives_up() -> None:
    api = FakeKubeApi()
    api.set_available(False)
    now = [0.0]

    class Stop:
        def wait(self, seconds: float) -> bool:
            now[0] += seconds
            if now[0] >= 10:
                api.set_available(True)
            return False

    version = wait_until_reachable(api, poll_interval_s=2, stop=Stop(), clock=lambda: now[0])  # type: ignore[arg-type]
    assert version is not None and api.calls.count("server_version") == 6
    api.set_available(False)
    now[0] = 0.0
    gave_up = wait_until_reachable(api, poll_interval_s=5, give_up_after_s=4.0, clock=lambda: now[0])
    assert gave_up is None


def test_backoff_grows_and_caps() -> None:
    b = ReconnectBackoff(initial_s=0.5, max_s=4.0, factor=2.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
