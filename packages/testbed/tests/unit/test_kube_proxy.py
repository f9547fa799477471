"""The pod proxy subresource: the API server relays a GET to a pod's port (kubectl get --raw, the metrics
helper), and says why when it cannot."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from vpccni.k8sapi.cluster import KubernetesCluster
from vpccni.k8sapi.errors import ApiUnavailable
from vpccni.testbed.kube import PODS, KubeApiServer


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"# path {self.path}\nup 1\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def pod_port() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer() as srv:
        meta = {"name": "aws-node-x", "namespace": "kube-system", "labels": {"k8s-app": "aws-node"}}
        srv.store.create(
            PODS, {"metadata": meta, "spec": {"nodeName": "n1"}, "status": {"podIP": "127.0.0.1"}}
        )
        srv.store.create(PODS, {"metadata": {"name": "pending", "namespace": "kube-system"}, "spec": {}})
        away = {"name": "elsewhere", "namespace": "kube-system"}
        srv.store.create(PODS, {"metadata": away, "spec": {}, "status": {"podIP": "192.0.2.7"}})
        yield srv


def test_get_through_the_proxy(server: KubeApiServer, pod_port: int) -> None:
    url = f"{server.url}/api/v1/namespaces/kube-system/pods/aws-node-x:{pod_port}/proxy/metrics?x=1"
    with urllib.request.urlopen(url) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert resp.read().decode() == "# path /metrics?x=1\nup 1\n"


def test_the_cluster_reader_scrapes_through_it(server: KubeApiServer, pod_port: int, tmp_path: Path) -> None:
    cfg = client.Configuration()
    config.load_kube_config(
        config_file=str(server.write_kubeconfig(tmp_path / "kc")), client_configuration=cfg
    )
    reader = KubernetesCluster(cfg)
    try:
        pods = reader.list_pods(namespace="kube-system", label_selector="k8s-app=aws-node")
        assert [p.name for p in pods] == ["aws-node-x"]
        assert "up 1" in reader.proxy_get(
            namespace="kube-system", pod="aws-node-x", port=pod_port, path="metrics"
        )
        with pytest.raises(ApiUnavailable, match=r"(?i)connection refused"):
            reader.proxy_get(namespace="kube-system", pod="aws-node-x", port=1, path="metrics")
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("pods/pending:61678/proxy/metrics", 503, 'pod "pending" has no IP yet'),
        ("pods/missing:61678/proxy/metrics", 404, 'pods "missing" not found'),
        ("pods/elsewhere:61678/proxy/metrics", 503, "dial tcp 192.0.2.7:61678: connect: no route"),
        ("pods/aws-node-x:metrics/proxy/metrics", 400, "invalid port"),
        ("pods/https:aws-node-x:1/proxy/metrics", 400, "scheme 'https' is not supported"),
    ],
)
def test_proxy_errors_are_statuses(server: KubeApiServer, path: str, code: int, message: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.url}/api/v1/namespaces/kube-system/{path}")
    assert info.value.code == code
    assert message in json.load(info.value)["message"]
