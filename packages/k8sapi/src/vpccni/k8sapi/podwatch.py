"""Keeps a PodCache current with this node's pods: a `ListWatcher` of `/api/v1/pods` with the field selector
`spec.nodeName=<node>`, its objects parsed into `PodInfo`."""

from __future__ import annotations

from collections.abc import Sequence

from vpccni.k8sapi.backoff import DEFAULT_BACKOFF, ReconnectBackoff
from vpccni.k8sapi.corev1 import CoreV1Requests
from vpccni.k8sapi.listwatch import ListWatcher, Raw
from vpccni.k8sapi.manifests import pod_from_manifest
from vpccni.k8sapi.podcache import PodCache


class _PodSink:
    """The `WatchSink` that files raw pods into a `PodCache`."""

    def __init__(self, cache: PodCache) -> None:
        self._cache = cache

    @property
    def resource_version(self) -> str:
        return self._cache.resource_version

    def replace_all(self, objects: Sequence[Raw], *, resource_version: str) -> None:
        self._cache.replace_all((pod_from_manifest(o) for o in objects), resource_version=resource_version)

    def upsert(self, obj: Raw, *, resource_version: str) -> None:
        self._cache.upsert(pod_from_manifest(obj), resource_version=resource_version)

    def remove(self, obj: Raw, *, resource_version: str) -> None:
        pod = pod_from_manifest(obj)
        self._cache.remove(pod.namespace, pod.name, resource_version=resource_version)

    def mark_current(self, resource_version: str) -> None:
        self._cache.mark_current(resource_version)


class PodWatcher(ListWatcher):
    def __init__(
        self,
        core: CoreV1Requests,
        cache: PodCache,
        *,
        node_name: str,
        watch_timeout_s: int = 300,
        request_timeout_s: float = 10.0,
        backoff: ReconnectBackoff = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(
            core,
            _PodSink(cache),
            path="/api/v1/pods",
            what="pods on this node",
            field_selector=f"spec.nodeName={node_name}",
            watch_timeout_s=watch_timeout_s,
            request_timeout_s=request_timeout_s,
            backoff=backoff,
        )
