"""``KubeApiServer``: a small Kubernetes API server on a ThreadingHTTPServer, for the official clients."""

from __future__ import annotations

import collections
import json
import logging
import os
import platform
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from vpccni.testbed.kube.bootstrap import bootstrap
from vpccni.testbed.kube.handler import KubeApiHandler
from vpccni.testbed.kube.proxy import PodDialer, default_dialer
from vpccni.testbed.kube.resources import NODES, ResourceType
from vpccni.testbed.kube.store import Obj, ObjectStore

log = logging.getLogger(__name__)

OutageMode = Literal["503", "reset"]
# (resource, object as POSTed, namespace from the URL): may change the object in place.
Admission = Callable[[ResourceType, dict[str, Any], str | None], None]

# What kubelet on an EKS node reports; the kernel is this machine's (the testbed's nodes share it).
NODE_INFO = {
    "kubeletVersion": "v1.31.0-eks-testbed",
    "osImage": "Amazon Linux 2023 (vpccni testbed)",
    "containerRuntimeVersion": "containerd://1.7.27",
    "kubeProxyVersion": "v1.31.0-eks-testbed",
    "operatingSystem": "linux",
    "architecture": "amd64",
    "bootID": "",
    "machineID": "",
    "systemUUID": "",
}


class KubeApiServer:
    """Serves the built-in types of ``resources.ALL_RESOURCES`` and the custom resources of every CRD it
    holds, with discovery, server-side tables and the OpenAPI v2 document, as kubectl expects.

    ``sock`` is an already bound socket (e.g. made inside a node's network namespace); otherwise the
    server binds ``host:port`` (port 0 picks a free one) in ``start()``. Without ``store``, it starts with
    what an EKS cluster has (``bootstrap.py``: system namespaces, the CNINode and ENIConfig CRDs).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        *,
        store: ObjectStore | None = None,
        bookmark_interval: float = 5.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        if store is None:
            store = ObjectStore()
            bootstrap(store)
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.stopping = False
        self.outage_mode: OutageMode = "503"
        self._host, self._port, self._sock = host, port, sock
        self._available = True
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        # (method, path with query) of every request, newest last: tests check what a client asked.
        self.forbidden: set[tuple[str, str]] = set()
        # How the pod proxy subresource reaches a pod (a testbed cluster dials inside the node's namespace).
        self.pod_dialer: PodDialer = default_dialer
        self.request_log: collections.deque[tuple[str, str]] = collections.deque(maxlen=10_000)
        # Mutating admission (what a webhook does): each hook may change an object POSTed to a collection
        # before it is stored, e.g. the VPC resource controller's pod webhook (`vpcrc`).
        self.admission: list[Admission] = []

    def admit(self, resource: ResourceType, obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        for hook in list(self.admission):
            hook(resource, obj, namespace)
        return obj

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        handler = type("BoundKubeApiHandler", (KubeApiHandler,), {"owner": self})
        if self._sock is None:
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            server_cls = type("KubeHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
            httpd = server_cls((self._host, self._port), handler)
        else:
            if self._sock.family not in (socket.AF_INET, socket.AF_INET6):
                raise ValueError(
                    "KubeApiServer needs a TCP socket (AF_INET or AF_INET6): clients connect by URL"
                )
            httpd = ThreadingHTTPServer(self._sock.getsockname()[:2], handler, bind_and_activate=False)
            httpd.socket.close()
            httpd.socket = self._sock
            httpd.server_address = self._sock.getsockname()[:2]
            if not self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                self._sock.listen(64)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.stopping = False
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="kube-apiserver", daemon=True
        )
        self._thread.start()
        log.info("testbed Kubernetes API server listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self.stopping = True
        self.store.notify_watchers()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the testbed API server is not started: call start() first")
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # -- outages ----------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._available

    def set_available(self, available: bool, *, mode: OutageMode = "503") -> None:
        """Simulate an API-server outage: every request answers 503 (``mode="503"``) or has its connection
        dropped unanswered (``mode="reset"``); open watch streams are cut either way."""
        self.outage_mode = mode
        self._available = available
        if not available:
            self.store.notify_watchers()
            if mode == "reset":
                self._close_connections()

    def forbid(self, method: str, plural: str) -> None:
        """Answer 403 Forbidden to ``method`` (GET, POST, PATCH...) on ``plural``, as missing RBAC would."""
        self.forbidden.add((method.upper(), plural))

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _close_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- helpers for tests and the demo -----------------------------------------------------------

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        """A kubeconfig for this server (plain HTTP, no credentials). JSON is valid YAML."""
        target = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testbed", "cluster": {"server": self.url}}],
            "users": [{"name": "testbed", "user": {}}],
            "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "testbed"}}],
            "current-context": "testbed",
        }
        target.write_text(json.dumps(config, indent=2))
        return target

    def register_node(
        self,
        name: str,
        instance_type: str,
        capacity_pods: int,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        taints: Iterable[Mapping[str, str]] = (),
        provider_id: str | None = None,
        unschedulable: bool = False,
        internal_ip: str = "",
    ) -> Obj:
        """Create a Node as kubelet would register it (well-known labels, capacity and allocatable, its
        addresses and system info: what ``kubectl get nodes -o wide`` shows)."""
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": instance_type,
            **(labels or {}),
        }
        resources = {"pods": str(capacity_pods), "cpu": "2", "memory": "8Gi"}
        spec: dict[str, Any] = {"taints": [dict(t) for t in taints]}
        if provider_id:
            spec["providerID"] = provider_id
        if unschedulable:
            spec["unschedulable"] = True
        addresses = [{"type": "Hostname", "address": name}]
        if internal_ip:
            addresses[:0] = [{"type": "InternalIP", "address": internal_ip}]
            addresses.append({"type": "InternalDNS", "address": name})
        return self.store.create(
            NODES,
            {
                "metadata": {"name": name, "labels": node_labels, "annotations": dict(annotations or {})},
                "spec": spec,
                "status": {
                    "capacity": resources,
                    "allocatable": dict(resources),
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": addresses,
                    "nodeInfo": {
                        **NODE_INFO,
                        "kernelVersion": platform.release(),
                        "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                        "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                        "bootID": str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
                    },
                },
            },
        )
