"""The real adapter: ``KubeApi`` over the official ``kubernetes`` client, raw JSON in and out."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client
from vpccni.k8sapi.backoff import DEFAULT_BACKOFF, ReconnectBackoff
from vpccni.k8sapi.config import KubeSettings
from vpccni.k8sapi.corev1 import MERGE_PATCH, CoreV1Requests
from vpccni.k8sapi.errors import translated
from vpccni.k8sapi.manifests import (
    cninode_from_manifest,
    cninode_manifest,
    eniconfig_from_manifest,
    event_manifest,
    features_manifest,
    node_from_manifest,
    version_from_manifest,
)
from vpccni.k8sapi.model import CniNode, CniNodeFeature, EniConfig, EventType, NodeInfo, VersionInfo
from vpccni.k8sapi.names import (
    CNINODE_GROUP,
    CNINODE_PLURAL,
    CNINODE_VERSION,
    ENICONFIG_GROUP,
    ENICONFIG_PLURAL,
    ENICONFIG_VERSION,
)
from vpccni.k8sapi.podcache import PodCache
from vpccni.k8sapi.podwatch import PodWatcher

log = logging.getLogger(__name__)

_CNINODES = (CNINODE_GROUP, CNINODE_VERSION, CNINODE_PLURAL)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class KubernetesApi:
    """``KubeApi`` for a real API server. Construction does no I/O; ``start()`` begins the pod watch."""

    def __init__(
        self,
        configuration: client.Configuration,
        *,
        settings: KubeSettings,
        backoff: ReconnectBackoff = DEFAULT_BACKOFF,
        now: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        self._settings = settings
        self._api_client = client.ApiClient(configuration)
        if settings.user_agent:
            self._api_client.user_agent = settings.user_agent
        # Typed as Any: with _preload_content=False the calls return the raw urllib3 response, not the
        # models their annotations promise (raw JSON keeps unknown fields and skips model validation).
        self._core = CoreV1Requests(self._api_client)
        self._custom: Any = client.CustomObjectsApi(self._api_client)
        self._version: Any = client.VersionApi(self._api_client)
        self._now = now
        self._pods = PodCache()
        self._watcher = PodWatcher(
            self._core,
            self._pods,
            node_name=settings.node_name,
            watch_timeout_s=settings.watch_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            backoff=backoff,
        )

    @property
    def pods(self) -> PodCache:
        return self._pods

    @property
    def watcher(self) -> PodWatcher:
        return self._watcher

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()

    def close(self) -> None:
        self.stop()
        self._api_client.close()

    # -- reads ------------------------------------------------------------------------------------

    @staticmethod
    def _json(resp: Any) -> Any:
        data = resp.data
        resp.release_conn()
        return json.loads(data)

    @staticmethod
    def _discard(resp: Any) -> None:
        """Read the unused body before the connection goes back to the pool (else the next request on
        that connection would read it as its status line)."""
        resp.read()
        resp.release_conn()

    def server_version(self, *, timeout_s: float = 5.0) -> VersionInfo:
        with translated("GET /version"):
            resp = self._version.get_code(_preload_content=False, _request_timeout=timeout_s)
            return version_from_manifest(self._json(resp))

    def get_node(self) -> NodeInfo:
        name = self._settings.node_name
        with translated(f"get node {name}"):
            resp = self._core.read_node(name, timeout=self._timeout)
            return node_from_manifest(self._json(resp))

    def get_eniconfig(self, name: str) -> EniConfig:
        raw = self._get_cluster_object(
            (ENICONFIG_GROUP, ENICONFIG_VERSION, ENICONFIG_PLURAL), name, "ENIConfig"
        )
        return eniconfig_from_manifest(raw)

    def get_cninode(self) -> CniNode:
        raw = self._get_cluster_object(_CNINODES, self._settings.node_name, "CNINode")
        return cninode_from_manifest(raw)

    def _get_cluster_object(self, resource: tuple[str, str, str], name: str, kind: str) -> Any:
        with translated(f"get {kind} {name}"):
            resp = self._custom.get_cluster_custom_object(
                *resource, name, _preload_content=False, _request_timeout=self._timeout
            )
            return self._json(resp)

    # -- writes -----------------------------------------------------------------------------------

    def create_cninode(self, features: Sequence[CniNodeFeature]) -> CniNode:
        name = self._settings.node_name
        with translated(f"create CNINode {name}"):
            resp = self._custom.create_cluster_custom_object(
                *_CNINODES,
                cninode_manifest(name, features),
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            return cninode_from_manifest(self._json(resp))

    def patch_cninode_features(self, features: Sequence[CniNodeFeature], *, resource_version: str) -> CniNode:
        name = self._settings.node_name
        # A resourceVersion in a merge patch is an optimistic lock (upstream: MergeFromWithOptimisticLock).
        body = {
            "metadata": {"resourceVersion": resource_version},
            "spec": {"features": features_manifest(features)},
        }
        with translated(f"patch CNINode {name} spec.features"):
            resp = self._custom.patch_cluster_custom_object(
                *_CNINODES,
                name,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            return cninode_from_manifest(self._json(resp))

    def emit_event(self, *, reason: str, message: str, type: EventType = EventType.WARNING) -> None:
        s = self._settings
        if not s.pod_name:
            log.debug("no MY_POD_NAME: not recording event %s: %s", reason, message)
            return
        own = self._pods.get(s.pod_namespace, s.pod_name)
        body = event_manifest(
            pod_namespace=s.pod_namespace,
            pod_name=s.pod_name,
            pod_uid=own.uid if own else "",
            node_name=s.node_name,
            reason=reason,
            message=message,
            type=type,
            now=self._now(),
        )
        with translated(f"create event {reason} on pod {s.pod_namespace}/{s.pod_name}"):
            self._discard(self._core.create_namespaced_event(s.pod_namespace, body, timeout=self._timeout))

    def annotate_pod(
        self, *, namespace: str, name: str, annotations: Mapping[str, str | None], resource_version: str = ""
    ) -> None:
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        with translated(f"annotate pod {namespace}/{name}"):
            self._discard(
                self._core.patch_namespaced_pod(
                    name, namespace, {"metadata": metadata}, timeout=self._timeout
                )
            )

    @property
    def _timeout(self) -> float:
        return self._settings.request_timeout_s
