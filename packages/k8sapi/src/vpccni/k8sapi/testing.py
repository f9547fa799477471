"""A stateful in-memory ``KubeApi`` for tests of code that uses the Kubernetes seam. Product code never
imports this module."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar

from vpccni.k8sapi.errors import ApiUnavailable, Conflict, NotFound
from vpccni.k8sapi.model import CniNode, CniNodeFeature, EniConfig, EventType, NodeInfo, PodInfo, VersionInfo
from vpccni.k8sapi.podcache import PodCache

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, kw_only=True)
class RecordedEvent:
    namespace: str
    pod_name: str
    reason: str
    message: str
    type: EventType


class FakeKubeApi:
    """Holds "server side" state (nodes, ENIConfigs, CNINodes, pods, events). The pod cache follows the
    server-side pods while available and started; after an outage it catches up on ``set_available(True)``,
    as the real watcher does by resuming or relisting."""

    def __init__(
        self,
        *,
        node_name: str = "node-1",
        pod_name: str = "aws-node-fake",
        pod_namespace: str = "kube-system",
    ):
        self.node_name = node_name
        self.pod_name = pod_name
        self.pod_namespace = pod_namespace
        self.nodes: dict[str, NodeInfo] = {}
        self.eniconfigs: dict[str, EniConfig] = {}
        self.cninodes: dict[str, CniNode] = {}
        self.server_pods: dict[tuple[str, str], PodInfo] = {}
        self.events: list[RecordedEvent] = []
        self.available = True
        self.started = False
        self.calls: list[str] = []
        self._pods = PodCache()
        self._rv = itertools.count(1)

    # -- test controls ----------------------------------------------------------------------------

    def set_available(self, available: bool) -> None:
        self.available = available
        if available and self.started:
            self._sync_cache()

    def put_node(self, node: NodeInfo) -> None:
        self.nodes[node.name] = replace(node, resource_version=self._next_rv())

    def put_eniconfig(self, config: EniConfig) -> None:
        self.eniconfigs[config.name] = config

    def put_pod(self, pod: PodInfo) -> None:
        self.server_pods[pod.key] = replace(pod, resource_version=self._next_rv())
        self._follow()

    def delete_pod(self, namespace: str, name: str) -> None:
        self.server_pods.pop((namespace, name), None)
        self._follow()

    def modify_cninode_externally(self, features: Sequence[CniNodeFeature]) -> None:
        """Another writer (the VPC Resource Controller) changes the CNINode: bumps its resourceVersion."""
        name = self.node_name
        self.cninodes[name] = CniNode(name=name, features=tuple(features), resource_version=self._next_rv())

    # -- KubeApi ----------------------------------------------------------------------------------

    @property
    def pods(self) -> PodCache:
        return self._pods

    def start(self) -> None:
        self.started = True
        if self.available:
            self._sync_cache()

    def stop(self) -> None:
        self.started = False

    def server_version(self, *, timeout_s: float = 5.0) -> VersionInfo:
        self._call("server_version")
        return VersionInfo(major="1", minor="31", git_version="v1.31.0-fake")

    def get_node(self) -> NodeInfo:
        self._call("get_node")
        return self._require(self.nodes, self.node_name, "node")

    def get_eniconfig(self, name: str) -> EniConfig:
        self._call("get_eniconfig")
        return self._require(self.eniconfigs, name, "ENIConfig")

    def get_cninode(self) -> CniNode:
        self._call("get_cninode")
        return self._require(self.cninodes, self.node_name, "CNINode")

    def create_cninode(self, features: Sequence[CniNodeFeature]) -> CniNode:
        self._call("create_cninode")
        if self.node_name in self.cninodes:
            raise Conflict(f"CNINode {self.node_name} already exists", status=409)
        node = CniNode(name=self.node_name, features=tuple(features), resource_version=self._next_rv())
        self.cninodes[self.node_name] = node
        return node

    def patch_cninode_features(self, features: Sequence[CniNodeFeature], *, resource_version: str) -> CniNode:
        self._call("patch_cninode_features")
        current = self._require(self.cninodes, self.node_name, "CNINode")
        if resource_version and resource_version != current.resource_version:
            raise Conflict(f"CNINode {self.node_name} changed since {resource_version}", status=409)
        node = replace(current, features=tuple(features), resource_version=self._next_rv())
        self.cninodes[self.node_name] = node
        return node

    def emit_event(self, *, reason: str, message: str, type: EventType = EventType.WARNING) -> None:
        self._call("emit_event")
        if self.pod_name:
            self.events.append(
                RecordedEvent(
                    namespace=self.pod_namespace,
                    pod_name=self.pod_name,
                    reason=reason,
                    message=message,
                    type=type,
                )
            )

    def annotate_pod(
        self, *, namespace: str, name: str, annotations: Mapping[str, str | None], resource_version: str = ""
    ) -> None:
        self._call("annotate_pod")
        pod = self._require(self.server_pods, (namespace, name), "pod")
        if resource_version and resource_version != pod.resource_version:
            raise Conflict(f"pod {namespace}/{name} changed since {resource_version}", status=409)
        merged = dict(pod.annotations)
        for key, value in annotations.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self.put_pod(replace(pod, annotations=MappingProxyType(merged)))

    # -- internals --------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        return str(next(self._rv))

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if not self.available:
            raise ApiUnavailable(f"{name}: the (fake) Kubernetes API server is unavailable", status=503)

    @staticmethod
    def _require(table: Mapping[K, V], key: K, kind: str) -> V:
        try:
            return table[key]
        except KeyError:
            raise NotFound(f"{kind} {key} not found", status=404) from None

    def _follow(self) -> None:
        if self.available and self.started:
            self._sync_cache()

    def _sync_cache(self) -> None:
        self._pods.replace_all(self.server_pods.values(), resource_version=str(next(self._rv)))


class FakeCluster:
    """A stateful ``ClusterReader``: pods, nodes, CNINodes, and what each pod's port answers (``serve``).
    A pod with nothing served answers as an unreachable pod does through the API server (503)."""

    def __init__(self) -> None:
        self.pods: list[PodInfo] = []
        self.nodes: list[NodeInfo] = []
        self.cninodes: list[CniNode] = []
        self._served: dict[tuple[str, str, int, str], str] = {}
        self.available = True

    def serve(self, *, namespace: str, pod: str, port: int, path: str, body: str) -> None:
        self._served[(namespace, pod, port, path.lstrip("/"))] = body

    def _check(self) -> None:
        if not self.available:
            raise ApiUnavailable("fake API server unavailable")

    def list_pods(self, *, namespace: str, label_selector: str = "") -> list[PodInfo]:
        self._check()
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if "=" in term)
        return [
            p
            for p in self.pods
            if namespace in ("", p.namespace) and all(p.labels.get(k) == v for k, v in wanted.items())
        ]

    def list_nodes(self) -> list[NodeInfo]:
        self._check()
        return list(self.nodes)

    def list_cninodes(self) -> list[CniNode]:
        self._check()
        return list(self.cninodes)

    def proxy_get(self, *, namespace: str, pod: str, port: int, path: str) -> str:
        self._check()
        body = self._served.get((namespace, pod, port, path.lstrip("/")))
        if body is None:
            raise ApiUnavailable(f"GET {path} on pod {namespace}/{pod}:{port}: 503 (no endpoint answers)")
        return body
