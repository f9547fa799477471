"""The pods on this node, kept current by the pod watcher (or a fake) and queried by ipamd."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from vpccni.k8sapi.model import PodInfo


class PodCache:
    """Thread-safe map of (namespace, name) → PodInfo. ``synced`` turns true after the first full list;
    the content stays (possibly stale) while the API server is unreachable."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._synced = False
        self._resource_version = ""

    @property
    def synced(self) -> bool:
        with self._cond:
            return self._synced

    @property
    def resource_version(self) -> str:
        """The last resourceVersion the cache is known to be current at."""
        with self._cond:
            return self._resource_version

    def get(self, namespace: str, name: str) -> PodInfo | None:
        with self._cond:
            return self._pods.get((namespace, name))

    def list(self) -> list[PodInfo]:
        with self._cond:
            return [self._pods[k] for k in sorted(self._pods)]

    def __len__(self) -> int:
        with self._cond:
            return len(self._pods)

    def wait_for(self, predicate: Callable[[PodCache], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every change) or ``timeout`` passes."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout)

    # -- writers (the watcher) --------------------------------------------------------------------

    def replace_all(self, pods: Iterable[PodInfo], *, resource_version: str) -> None:
        with self._cond:
            self._pods = {p.key: p for p in pods}
            self._synced = True
            self._resource_version = resource_version
            self._cond.notify_all()

    def upsert(self, pod: PodInfo, *, resource_version: str = "") -> None:
        with self._cond:
            self._pods[pod.key] = pod
            self._resource_version = resource_version or pod.resource_version
            self._cond.notify_all()

    def remove(self, namespace: str, name: str, *, resource_version: str = "") -> None:
        with self._cond:
            self._pods.pop((namespace, name), None)
            if resource_version:
                self._resource_version = resource_version
            self._cond.notify_all()

    def mark_current(self, resource_version: str) -> None:
        """A bookmark: nothing changed up to ``resource_version``."""
        with self._cond:
            self._resource_version = resource_version
            self._cond.notify_all()
