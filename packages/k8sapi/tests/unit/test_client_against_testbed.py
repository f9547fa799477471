"""The real adapter (official ``kubernetes`` client) against the testbed API server on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from vpccni.k8sapi import (
    ApiUnavailable,
    CniNodeFeature,
    Conflict,
    Forbidden,
    KubeEndpoint,
    KubernetesApi,
    KubeSettings,
    NotFound,
    PodCache,
    ReconnectBackoff,
    eniconfig_name_for,
    ensure_cninode_features,
    load_config,
    wait_until_reachable,
)
from vpccni.testbed.kube import CNINODES, ENICONFIGS, PODS, KubeApiServer

NODE = "ip-10-0-0-1.us-west-2.compute.internal"
FAST = ReconnectBackoff(initial_s=0.05, max_s=0.2, jitter=0.0)


def pod(name: str, node: str = NODE, ns: str = "default", **annotations: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.20"},
    }


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer(bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture
def api(server: KubeApiServer, tmp_path: Path) -> Iterator[KubernetesApi]:
    cfg = load_config(kubeconfig=server.write_kubeconfig(tmp_path / "kubeconfig"))
    settings = KubeSettings(node_name=NODE, pod_name="aws-node-abcde", request_timeout_s=2.0)
    adapter = KubernetesApi(cfg, settings=settings, backoff=FAST)
    try:
        yield adapter
    finally:
        adapter.close()


def names(cache: PodCache) -> list[str]:
    return [p.name for p in cache.list()]


def pod_ips_annotation(cache: PodCache, namespace: str, name: str) -> str | None:
    pod = cache.get(namespace, name)
    return None if pod is None else pod.annotations.get("vpc.amazonaws.com/pod-ips")


def watch_requests(server: KubeApiServer) -> list[str]:
    return [path for method, path in list(server.request_log) if "watch=true" in path.lower()]


def wait_names(cache: PodCache, expected: list[str]) -> None:
    assert cache.wait_for(lambda c: names(c) == expected, timeout=10), names(cache)


def test_node_eniconfig_and_typed_not_found(server: KubeApiServer, api: KubernetesApi) -> None:
    server.register_node(NODE, "m5.large", 29, labels={"topology.kubernetes.io/zone": "us-west-2a"})
    server.store.create(
        ENICONFIGS,
        {"metadata": {"name": "us-west-2a"}, "spec": {"subnet": "subnet-9", "securityGroups": ["sg-1"]}},
    )
    node = api.get_node()
    assert node.max_pods == 29 and node.labels["node.kubernetes.io/instance-type"] == "m5.large"
    name = eniconfig_name_for(node, label_key="topology.kubernetes.io/zone")
    cfg = api.get_eniconfig(name)
    assert (cfg.subnet, cfg.security_groups) == ("subnet-9", ("sg-1",))
    with pytest.raises(NotFound):
        api.get_eniconfig("default")
    assert api.server_version().git_version.startswith("v1.31")


def test_pod_cache_follows_this_nodes_pods(server: KubeApiServer, api: KubernetesApi) -> None:
    server.store.create(PODS, pod("a"))
    server.store.create(PODS, pod("elsewhere", node="other-node"))
    api.start()
    wait_names(api.pods, ["a"])
    assert api.pods.synced and api.pods.get("default", "a").uid  # type: ignore[union-attr]
    server.store.create(PODS, pod("b", ns="kube-system"))
    server.store.patch(PODS, "a", {"metadata": {"annotations": {"k": "v"}}}, namespace="default")
    server.store.delete(PODS, "b", "kube-system")
    server.store.create(PODS, pod("c"))
    wait_names(api.pods, ["a", "c"])
    assert api.pods.get("default", "a").annotations == {"k": "v"}  # type: ignore[union-attr]
    assert api.watcher.relists == 1


def test_outage_typed_errors_then_watch_resumes_without_relist(
    server: KubeApiServer, api: KubernetesApi
) -> None:
    server.register_node(NODE, "m5.large", 29)
    server.store.create(PODS, pod("a"))
    api.start()
    wait_names(api.pods, ["a"])
    server.set_available(False)
    with pytest.raises(ApiUnavailable):
        api.get_node()
    server.store.create(PODS, pod("during-outage"))
    server.store.delete(PODS, "a", "default")
    assert names(api.pods) == ["a"]  # stale, still served
    server.set_available(True)
    wait_names(api.pods, ["during-outage"])
    assert api.watcher.relists == 1  # resumed from its resourceVersion: the history still covered it
    assert api.get_node().max_pods == 29


def test_relist_after_410_when_history_was_compacted(server: KubeApiServer, api: KubernetesApi) -> None:
    server.store.create(PODS, pod("a"))
    api.start()
    wait_names(api.pods, ["a"])
    server.set_available(False, mode="reset")
    server.store.create(PODS, pod("b"))
    server.store.delete(PODS, "a", "default")
    server.store.compact()  # the watcher's resourceVersion is now too old: 410 Expired on resume
    server.set_available(True)
    wait_names(api.pods, ["b"])
    assert api.watcher.relists == 2
    server.store.create(PODS, pod("c"))
    wait_names(api.pods, ["b", "c"])


def test_cninode_features_merge_patch_with_optimistic_lock(server: KubeApiServer, api: KubernetesApi) -> None:
    sgp = CniNodeFeature(name="SecurityGroupsForPods")
    custom = CniNodeFeature(name="CustomNetworking", value="us-west-2a")
    assert ensure_cninode_features(api, [sgp]).features == (sgp,)
    node = ensure_cninode_features(api, [custom])
    assert node.features == (sgp, custom)
    assert server.store.get(CNINODES, NODE)["spec"]["features"] == [
        {"name": "SecurityGroupsForPods"},
        {"name": "CustomNetworking", "value": "us-west-2a"},
    ]
    stale = node.resource_version
    server.store.patch(CNINODES, NODE, {"metadata": {"labels": {"by": "controller"}}})
    with pytest.raises(Conflict):
        api.patch_cninode_features([sgp], resource_version=stale)


def test_events_on_the_aws_node_pod_and_pod_ip_annotation(server: KubeApiServer, api: KubernetesApi) -> None:
    own = server.store.create(PODS, pod("aws-node-abcde", ns="kube-system"))
    server.store.create(PODS, pod("web"))
    api.start()
    wait_names(api.pods, ["web", "aws-node-abcde"])  # sorted by (namespace, name)
    api.emit_event(reason="MissingENIConfig", message="ENIConfig us-west-2a not found: create it")
    events, _ = server.store.list(
        "events", "kube-system", field_selector="involvedObject.name=aws-node-abcde"
    )
    assert [(e["reason"], e["type"]) for e in events] == [("MissingENIConfig", "Warning")]
    assert events[0]["involvedObject"]["uid"] == own["metadata"]["uid"]
    api.annotate_pod(namespace="default", name="web", annotations={"vpc.amazonaws.com/pod-ips": "10.0.0.20"})
    assert api.pods.wait_for(lambda c: pod_ips_annotation(c, "default", "web") == "10.0.0.20", timeout=10)
    api.annotate_pod(namespace="default", name="web", annotations={"vpc.amazonaws.com/pod-ips": None})
    assert (
        "vpc.amazonaws.com/pod-ips" not in server.store.get(PODS, "web", "default")["metadata"]["annotations"]
    )
    with pytest.raises(NotFound):
        api.annotate_pod(namespace="default", name="missing", annotations={"x": "y"})


def test_probe_waits_for_the_api_server(server: KubeApiServer, api: KubernetesApi) -> None:
    server.set_available(False)
    assert wait_until_reachable(api, poll_interval_s=0.05, request_timeout_s=1, give_up_after_s=0.2) is None
    timer = threading.Timer(0.3, server.set_available, args=(True,))
    timer.start()
    try:
        version = wait_until_reachable(api, poll_interval_s=0.05, request_timeout_s=1, give_up_after_s=30)
    finally:
        timer.cancel()
    assert version is not None and version.major == "1"


def test_load_config_sources(server: KubeApiServer, tmp_path: Path) -> None:
    nowhere = str(tmp_path / "none")
    assert load_config(KubeEndpoint(cluster_endpoint=server.url + "/"), token_file=nowhere).host == server.url
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("secret-token")
    ca.write_text("not a real CA, only read as a path")
    in_cluster = load_config(
        KubeEndpoint(cluster_endpoint="https://10.0.0.1:6443"), token_file=str(token), ca_file=str(ca)
    )
    assert in_cluster.host == "https://10.0.0.1:6443"
    assert in_cluster.api_key["BearerToken"].lower() == "bearer secret-token"
    service = load_config(
        KubeEndpoint(service_host="10.100.0.1", service_port=8443), token_file=str(token), ca_file=str(ca)
    )
    assert service.host == "https://10.100.0.1:8443"
    with pytest.raises(FileNotFoundError, match="CLUSTER_ENDPOINT"):
        load_config(KubeEndpoint(kubeconfig=str(tmp_path / "missing")), token_file=nowhere)
    with pytest.raises(FileNotFoundError, match="KUBECONFIG"):
        load_config(KubeEndpoint(), token_file=nowhere)
    kubeconfig = server.write_kubeconfig(tmp_path / "kc")
    assert load_config(KubeEndpoint(kubeconfig=str(kubeconfig)), token_file=nowhere).host == server.url


def test_watch_renews_after_server_timeout_and_tracks_bookmarks(
    server: KubeApiServer, tmp_path: Path
) -> None:
    cfg = load_config(kubeconfig=server.write_kubeconfig(tmp_path / "kubeconfig"))
    settings = KubeSettings(node_name=NODE, request_timeout_s=2.0, watch_timeout_s=1)
    adapter = KubernetesApi(cfg, settings=settings, backoff=FAST)
    try:
        adapter.start()
        assert adapter.pods.wait_for(lambda c: c.synced, timeout=10)
        server.store.create(PODS, pod("elsewhere", node="other-node"))  # advances the RV, not our cache
        target = str(server.store.resource_version)
        # Bookmarks carry the RV forward although no pod of this node changed.
        assert adapter.pods.wait_for(lambda c: c.resource_version == target, timeout=10)
        # The 1 s watches end and are renewed from the last RV, with no relist.
        assert adapter.pods.wait_for(lambda c: len(watch_requests(server)) >= 2, timeout=10)
        server.store.create(PODS, pod("late"))
        assert adapter.pods.wait_for(lambda c: names(c) == ["late"], timeout=10)
        assert adapter.watcher.relists == 1
        assert all("resourceVersion=" in path for path in watch_requests(server))
    finally:
        adapter.close()


def test_missing_rbac_is_forbidden(server: KubeApiServer, api: KubernetesApi) -> None:
    server.store.create(PODS, pod("web"))
    server.forbid("PATCH", "pods")
    with pytest.raises(Forbidden, match="patch pods"):
        api.annotate_pod(
            namespace="default", name="web", annotations={"vpc.amazonaws.com/pod-ips": "10.0.0.20"}
        )
