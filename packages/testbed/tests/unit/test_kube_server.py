"""The testbed API server through the official ``kubernetes`` client, on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from vpccni.testbed.kube import CNINODES, ENICONFIGS, PODS, KubeApiServer


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer(bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture
def api(server: KubeApiServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


def make_pod(name: str, node: str, ns: str = "default") -> dict:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }


def test_get_node_registered_like_kubelet(server: KubeApiServer, api: client.ApiClient) -> None:
    server.register_node("ip-10-0-0-1", "m5.large", 29, labels={"k8s.amazonaws.com/eniConfig": "az1"})
    node = client.CoreV1Api(api).read_node("ip-10-0-0-1")
    assert node.status.capacity["pods"] == "29"
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "m5.large"
    assert node.metadata.labels["k8s.amazonaws.com/eniConfig"] == "az1"
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).read_node("missing")
    assert info.value.status == 404


def test_discovery_and_version(server: KubeApiServer, api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().git_version.startswith("v1.31")
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"crd.k8s.amazonaws.com", "vpcresources.k8s.aws", "events.k8s.io"} <= groups
    core = client.CoreV1Api(api).get_api_resources()
    assert {"nodes", "pods", "events"} <= {r.name for r in core.resources}
    with urllib.request.urlopen(f"{server.url}/apis/vpcresources.k8s.aws/v1alpha1") as resp:
        assert json.load(resp)["resources"][0]["kind"] == "CNINode"


def test_list_pods_by_node(server: KubeApiServer, api: client.ApiClient) -> None:
    for name, node in (("a", "n1"), ("b", "n2"), ("c", "n1")):
        server.store.create(PODS, make_pod(name, node))
    pods = client.CoreV1Api(api).list_pod_for_all_namespaces(field_selector="spec.nodeName=n1")
    assert [p.metadata.name for p in pods.items] == ["a", "c"]
    assert pods.metadata.resource_version == str(server.store.resource_version)


def test_watch_streams_changes_in_order_with_bookmarks(server: KubeApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    server.store.create(PODS, make_pod("before", "n1"))  # so the watch starts from a real RV, not "0"
    start = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").metadata.resource_version

    def changes() -> None:
        server.store.create(PODS, make_pod("a", "n1"))
        server.store.create(PODS, make_pod("other", "n2"))
        server.store.patch(PODS, "a", {"metadata": {"annotations": {"k": "v"}}}, namespace="default")
        server.store.delete(PODS, "a", "default")

    writer = threading.Thread(target=changes)
    writer.start()
    seen = []
    for event in watch.Watch().stream(
        core.list_pod_for_all_namespaces,
        field_selector="spec.nodeName=n1",
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    ):
        seen.append((event["type"], event["raw_object"]["metadata"].get("name")))
    writer.join()
    changes_seen = [s for s in seen if s[0] != "BOOKMARK"]
    assert changes_seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert ("BOOKMARK", None) in seen


def test_watch_from_expired_resource_version_is_410(server: KubeApiServer, api: client.ApiClient) -> None:
    server.store.create(PODS, make_pod("a", "n1"))
    server.store.create(PODS, make_pod("b", "n1"))
    server.store.compact()  # RV 1 is now older than the history
    with pytest.raises(ApiException) as info:
        for _ in watch.Watch().stream(
            client.CoreV1Api(api).list_pod_for_all_namespaces, resource_version="1", timeout_seconds=1
        ):
            pass
    assert info.value.status == 410


def test_merge_patch_on_cninode_and_strategic_merge_is_415(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api)
    args = ("vpcresources.k8s.aws", "v1alpha1", "cninodes")
    created = custom.create_cluster_custom_object(*args, {"metadata": {"name": "n1"}, "spec": {}})
    patched = custom.patch_cluster_custom_object(
        *args,
        "n1",
        {
            "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
            "spec": {"features": [{"name": "CustomNetworking", "value": "az1"}]},
        },
        _content_type="application/merge-patch+json",
    )
    assert server.store.get(CNINODES, "n1")["spec"]["features"] == [
        {"name": "CustomNetworking", "value": "az1"}
    ]
    assert patched["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as info:
        custom.patch_cluster_custom_object(
            *args,
            "n1",
            {"metadata": {"resourceVersion": "1"}, "spec": {}},
            _content_type="application/merge-patch+json",
        )
    assert info.value.status == 409
    with pytest.raises(ApiException) as info:
        custom.patch_cluster_custom_object(
            *args, "n1", {"spec": {}}, _content_type="application/strategic-merge-patch+json"
        )
    assert info.value.status == 415


def test_eniconfig_get_and_strategic_patch_on_pod(server: KubeApiServer, api: client.ApiClient) -> None:
    server.store.create(ENICONFIGS, {"metadata": {"name": "az1"}, "spec": {"subnet": "subnet-1"}})
    got = client.CustomObjectsApi(api).get_cluster_custom_object(
        "crd.k8s.amazonaws.com", "v1alpha1", "eniconfigs", "az1"
    )
    assert got["spec"]["subnet"] == "subnet-1"
    server.store.create(PODS, make_pod("a", "n1"))
    pod = client.CoreV1Api(api).patch_namespaced_pod(
        "a", "default", {"metadata": {"annotations": {"x": "y"}}}
    )
    assert pod.metadata.annotations == {"x": "y"}


def test_create_event(server: KubeApiServer, api: client.ApiClient) -> None:
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="aws-node-abc.", namespace="kube-system"),
        involved_object=client.V1ObjectReference(kind="Pod", name="aws-node-abc", namespace="kube-system"),
        reason="MissingIAMPermissions",
        message="ec2:AssignPrivateIpAddresses unauthorized",
        type="Warning",
    )
    client.CoreV1Api(api).create_namespaced_event("kube-system", body)
    events, _ = server.store.list("events", "kube-system", field_selector="involvedObject.name=aws-node-abc")
    assert [e["reason"] for e in events] == ["MissingIAMPermissions"]


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_outage_and_recovery(server: KubeApiServer, api: client.ApiClient, mode: str) -> None:
    server.register_node("n1", "m5.large", 29)
    api.rest_client.pool_manager.connection_pool_kw["retries"] = 0
    core = client.CoreV1Api(api)
    server.set_available(False, mode=mode)  # type: ignore[arg-type]
    with pytest.raises(Exception) as info:
        core.read_node("n1")
    if mode == "503":
        assert isinstance(info.value, ApiException) and info.value.status == 503
    server.set_available(True)
    assert core.read_node("n1").metadata.name == "n1"


def test_served_on_a_given_socket() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    with KubeApiServer(sock=sock) as srv:
        assert srv.url.endswith(f":{sock.getsockname()[1]}")
        with urllib.request.urlopen(f"{srv.url}/version") as resp:
            assert json.load(resp)["major"] == "1"


def test_watch_from_zero_starts_with_the_current_state(server: KubeApiServer, api: client.ApiClient) -> None:
    server.store.create(PODS, make_pod("a", "n1"))
    server.store.create(PODS, make_pod("b", "n2"))
    seen = [
        (e["type"], e["raw_object"]["metadata"]["name"])
        for e in watch.Watch().stream(
            client.CoreV1Api(api).list_pod_for_all_namespaces,
            field_selector="spec.nodeName=n1",
            resource_version="0",
            timeout_seconds=1,
        )
    ]
    assert seen == [("ADDED", "a")]


def test_ipv6_loopback() -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with KubeApiServer(host="::1") as srv:
        assert srv.url.startswith("http://[::1]:")
        with urllib.request.urlopen(f"{srv.url}/version") as resp:
            assert json.load(resp)["major"] == "1"


def test_raw_watch_is_chunked_json_lines(server: KubeApiServer) -> None:
    import http.client

    rv = server.store.create(PODS, make_pod("a", "n1"))["metadata"]["resourceVersion"]
    server.store.patch(PODS, "a", {"metadata": {"labels": {"x": "1"}}}, namespace="default")
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "GET", f"/api/v1/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1"
        )
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
        lines = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    finally:
        conn.close()
    # The change, then bookmarks (every 0.2 s here, and one as the 1 s timeout ends the stream).
    assert lines[0]["type"] == "MODIFIED" and lines[0]["object"]["metadata"]["labels"] == {"x": "1"}
    assert len(lines) >= 2 and {e["type"] for e in lines[1:]} == {"BOOKMARK"}
    assert lines[-1]["object"]["metadata"]["resourceVersion"] == str(server.store.resource_version)


def test_delete_through_the_client(server: KubeApiServer, api: client.ApiClient) -> None:
    server.store.create(PODS, make_pod("a", "n1"))
    client.CoreV1Api(api).delete_namespaced_pod("a", "default")
    assert server.store.list(PODS)[0] == []
