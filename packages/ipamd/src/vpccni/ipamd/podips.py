"""ANNOTATE_POD_IP: the pod annotation `vpc.amazonaws.com/pod-ips`, written as upstream writes it.

Upstream added it for Calico, which reads a pod's address from the annotation sooner than kubelet reports
`status.podIP`. On ADD the pod gets its (first) address; on DEL the annotation is set to "" only if it still
holds the released address, so a newer sandbox's address is never wiped. Failures are logged, never fail the
pod (as upstream).

Unlike upstream, which patches inside the AddNetwork call, the patches go out on one background thread: the
ADD never waits for the API server (which may be slow or down), and the pod's latest operation wins when
several queue up (an ADD followed by its DEL before the first patch went out leaves the pod unannotated, as it
should be). Operations on one pod stay in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from vpccni.ipamd.allocator import PodAllocation
from vpccni.k8sapi import Conflict, K8sApiError, NotFound, PodCache
from vpccni.networkutils.model import IPAddress

log = logging.getLogger(__name__)

POD_IPS_ANNOTATION = "vpc.amazonaws.com/pod-ips"
CONFLICT_ATTEMPTS = 3
_CACHE_CATCH_UP_S = 1.0  # after a conflict, how long to wait for the pod watch to show the newer pod


class PodAnnotationApi(Protocol):
    """The part of `vpccni.k8sapi.KubeApi` the annotator uses."""

    @property
    def pods(self) -> PodCache: ...

    def annotate_pod(
        self, *, namespace: str, name: str, annotations: Mapping[str, str | None], resource_version: str = ""
    ) -> None: ...


@dataclass(frozen=True, kw_only=True)
class _Op:
    ip: IPAddress
    assigned: bool  # True: annotate with `ip`; False: clear the annotation if it holds `ip`


class PodIpAnnotator:
    """An `AllocationListener`: queues the annotation of each assigned or released pod address."""

    def __init__(self, *, api: PodAnnotationApi) -> None:
        self._api = api
        self._pending: dict[tuple[str, str], _Op] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- AllocationListener ---------------------------------------------------------------------

    def assigned(self, pod: PodAllocation) -> None:
        self._queue(pod, assigned=True)

    def released(self, pod: PodAllocation) -> None:
        self._queue(pod, assigned=False)

    def _queue(self, pod: PodAllocation, *, assigned: bool) -> None:
        if not pod.metadata.name:
            return  # a queued DEL of a pod nobody named: there is no pod object to annotate
        with self._cond:
            key = (pod.metadata.namespace, pod.metadata.name)
            self._pending[key] = _Op(ip=pod.allocation.ip, assigned=assigned)
            self._cond.notify_all()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pod-ips-annotator", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every queued annotation went out (tests, shutdown); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout=timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                key = next(iter(self._pending))
                op = self._pending.pop(key)
                self._busy = True
            try:
                self.apply(key[0], key[1], op)
            except Exception:
                log.exception("annotating pod %s/%s failed", *key)

    # --- one operation --------------------------------------------------------------------------

    def apply(self, namespace: str, name: str, op: _Op) -> None:
        value = str(op.ip)
        for _ in range(CONFLICT_ATTEMPTS):
            pod = self._api.pods.get(namespace, name)
            current = None if pod is None else pod.annotations.get(POD_IPS_ANNOTATION)
            if op.assigned:
                if current == value:
                    return
                new, version = value, ""  # ADD always wins (upstream patches without a lock)
            else:
                if current != value:
                    if current:
                        log.info(
                            "pod %s/%s: %s holds %s, not the released %s; left as is",
                            namespace, name, POD_IPS_ANNOTATION, current, value,
                        )  # fmt: skip
                    return
                assert pod is not None
                new, version = "", pod.resource_version  # only if nothing re-annotated it meanwhile
            try:
                self._api.annotate_pod(
                    namespace=namespace,
                    name=name,
                    annotations={POD_IPS_ANNOTATION: new},
                    resource_version=version,
                )
            except Conflict:
                self._wait_newer(namespace, name, version)
                continue
            except NotFound:
                log.debug("pod %s/%s is gone: nothing to annotate", namespace, name)
                return
            except K8sApiError as err:
                log.warning(
                    "could not set %s=%r on pod %s/%s: %s", POD_IPS_ANNOTATION, new, namespace, name, err
                )
                return
            log.debug("pod %s/%s: %s=%r", namespace, name, POD_IPS_ANNOTATION, new)
            return
        log.warning("pod %s/%s kept changing: %s not cleared", namespace, name, POD_IPS_ANNOTATION)

    def _wait_newer(self, namespace: str, name: str, version: str) -> None:
        """After a conflict: give the pod watch a moment to deliver the pod that is newer than `version`."""

        def newer(cache: PodCache) -> bool:
            pod = cache.get(namespace, name)
            return pod is None or pod.resource_version != version

        self._api.pods.wait_for(newer, _CACHE_CATCH_UP_S)
