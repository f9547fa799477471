"""A cluster-wide read-only view for operators and the cni-metrics-helper: every aws-node pod, every node and
CNINode, and a pod's HTTP endpoint through the API server's pod proxy (no network path to the nodes needed,
only RBAC: ``pods``, ``pods/proxy``, ``nodes``, ``cninodes`` get/list)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from vpccni.k8sapi.corev1 import CoreV1Requests
from vpccni.k8sapi.errors import K8sApiError, from_api_exception, translated
from vpccni.k8sapi.manifests import cninode_from_manifest, node_from_manifest, pod_from_manifest
from vpccni.k8sapi.model import CniNode, NodeInfo, PodInfo
from vpccni.k8sapi.names import CNINODE_GROUP, CNINODE_PLURAL, CNINODE_VERSION

AWS_NODE_NAMESPACE = "kube-system"
AWS_NODE_SELECTOR = "k8s-app=aws-node"  # upstream's DaemonSet label; the metrics helper selects on it


class ClusterReader(Protocol):
    """Every call raises a ``K8sApiError`` (``ApiUnavailable``, ``Forbidden``, ``NotFound``...)."""

    def list_pods(self, *, namespace: str, label_selector: str = "") -> list[PodInfo]:
        """Pods of ``namespace`` ("": every namespace)."""
        ...

    def list_nodes(self) -> list[NodeInfo]: ...

    def list_cninodes(self) -> list[CniNode]: ...

    def proxy_get(self, *, namespace: str, pod: str, port: int, path: str) -> str:
        """The body of ``GET <path>`` on the pod's ``port``, relayed by the API server."""
        ...


class KubernetesCluster:
    """The real ``ClusterReader`` over the official client. Construction does no I/O."""

    def __init__(self, configuration: client.Configuration, *, request_timeout_s: float = 10.0) -> None:
        self._api_client = client.ApiClient(configuration)
        self._core = CoreV1Requests(self._api_client)
        self._custom: Any = client.CustomObjectsApi(self._api_client)
        self._timeout = request_timeout_s

    def close(self) -> None:
        self._api_client.close()

    @staticmethod
    def _body(resp: Any) -> bytes:
        data: bytes = resp.data
        resp.release_conn()
        return data

    def list_pods(self, *, namespace: str, label_selector: str = "") -> list[PodInfo]:
        with translated(f"list pods in {namespace} ({label_selector or 'all'})"):
            resp = self._core.list_namespaced_pods(
                namespace, label_selector=label_selector, timeout=self._timeout
            )
            return [pod_from_manifest(p) for p in json.loads(self._body(resp)).get("items") or []]

    def list_nodes(self) -> list[NodeInfo]:
        with translated("list nodes"):
            resp = self._core.list_nodes(timeout=self._timeout)
            return [node_from_manifest(n) for n in json.loads(self._body(resp)).get("items") or []]

    def list_cninodes(self) -> list[CniNode]:
        with translated("list CNINodes"):
            resp = self._custom.list_cluster_custom_object(
                CNINODE_GROUP,
                CNINODE_VERSION,
                CNINODE_PLURAL,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            return [cninode_from_manifest(c) for c in json.loads(self._body(resp)).get("items") or []]

    def proxy_get(self, *, namespace: str, pod: str, port: int, path: str) -> str:
        what = f"GET {path} on pod {namespace}/{pod}:{port} through the API server"
        with translated(what):
            try:
                resp = self._core.proxy_pod_get(namespace, pod, port, path, timeout=self._timeout)
            except ApiException as exc:
                raise _with_server_message(exc, what) from exc
            return self._body(resp).decode(errors="replace")


def _with_server_message(exc: ApiException, what: str) -> K8sApiError:
    """The translated error, plus the API server's own words: for the pod proxy they say why the pod could
    not be reached ("dial tcp 10.0.0.4:61678: connect: connection refused")."""
    err = from_api_exception(exc, what)
    try:
        message = str(json.loads(exc.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        message = ""
    return type(err)(f"{err} [server: {message}]", status=err.status) if message else err
