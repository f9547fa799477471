"""Leader election on a `coordination.k8s.io/v1` Lease, as upstream's controller does (controller-runtime's
defaults: the lease `amazon-network-policy-controller-k8s`, 15 s duration, 10 s renew deadline, 2 s retries).

Standby replicas keep their caches warm and only the holder writes PolicyEndpoints, so a rollout or a lost
node hands over within one lease duration instead of a pod reschedule. Expiry is judged by when *this* replica
saw the lease last change (its local clock), never by the holder's timestamps, so clock skew between nodes
cannot make two leaders."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client
from vpccni.k8sapi.errors import Conflict, K8sApiError, NotFound, translated

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "coordination.k8s.io", "v1", "leases"
DEFAULT_LEASE_NAME = "amazon-network-policy-controller-k8s"


@dataclass(frozen=True, kw_only=True)
class LeaseTimings:
    duration_s: float = 15.0  # a standby takes over this long after the holder's last renewal
    renew_deadline_s: float = 10.0  # the holder steps down when it could not renew for this long
    retry_s: float = 2.0


@dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    holder: str
    duration_s: int
    acquired: str = ""
    renewed: str = ""
    transitions: int = 0
    resource_version: str = ""  # the server's, for the optimistic lock of an update


class LeaseStore(Protocol):
    """One Lease object. `create` and `update` return False when another writer won (409)."""

    def get(self) -> LeaseRecord | None: ...

    def create(self, record: LeaseRecord) -> bool: ...

    def update(self, record: LeaseRecord) -> bool: ...


def micro_time(at: datetime) -> str:
    """The API's MicroTime: RFC 3339 with microseconds, UTC."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        *,
        store: LeaseStore,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._identity = identity
        self._timings = timings
        self._monotonic = monotonic
        self._wall = wall
        self._seen: tuple[str, str, str] | None = None  # holder, renewed, resourceVersion last seen
        self._seen_at = 0.0
        self._last_error = ""
        self.leading = False

    def run(self, stop: threading.Event, on_started_leading: Callable[[], None]) -> bool:
        """Block until `stop` (the lease is released: True) or leadership is lost (False). Waits for the
        lease first, then calls `on_started_leading` once and renews every retry period."""
        t = self._timings
        while not self.try_acquire_or_renew():
            if stop.wait(t.retry_s * (1 + 0.2 * random.random())):  # jittered: standbys don't retry in step
                return True
        log.info("leader election: %s holds the lease", self._identity)
        self.leading = True
        on_started_leading()
        renewed_at = self._monotonic()
        while not stop.wait(t.retry_s):
            if self.try_acquire_or_renew():
                renewed_at = self._monotonic()
            elif self._monotonic() - renewed_at > t.renew_deadline_s:
                self.leading = False
                log.error(
                    "leader election: lease not renewed for %.0f s (%s); stepping down",
                    t.renew_deadline_s,
                    self._last_error or "another replica took it",
                )
                return False
        self.release()
        return True

    def try_acquire_or_renew(self) -> bool:
        now = micro_time(self._wall())
        duration = max(1, round(self._timings.duration_s))
        try:
            current = self._store.get()
            if current is None:
                mine = LeaseRecord(holder=self._identity, duration_s=duration, acquired=now, renewed=now)
                return self._store.create(mine)
            self._observe(current)
            ours = current.holder == self._identity
            if current.holder and not ours and not self._expired(current):
                return False
            mine = replace(
                current,
                holder=self._identity,
                duration_s=duration,
                renewed=now,
                acquired=current.acquired if ours else now,
                transitions=current.transitions if ours else current.transitions + 1,
            )
            return self._store.update(mine)
        except K8sApiError as err:
            self._note_error(str(err))
            return False

    def release(self) -> None:
        """Give the lease up on a clean stop, so a standby takes over at its next retry."""
        try:
            current = self._store.get()
            if current is not None and current.holder == self._identity:
                now = micro_time(self._wall())
                self._store.update(replace(current, holder="", duration_s=1, renewed=now))
                log.info("leader election: lease released")
        except K8sApiError as err:
            log.warning("leader election: could not release the lease (%s); it expires on its own", err)
        self.leading = False

    def _observe(self, record: LeaseRecord) -> None:
        seen = (record.holder, record.renewed, record.resource_version)
        if seen != self._seen:
            self._seen, self._seen_at = seen, self._monotonic()

    def _expired(self, record: LeaseRecord) -> bool:
        return self._monotonic() - self._seen_at > record.duration_s

    def _note_error(self, message: str) -> None:
        if message != self._last_error:  # one line per distinct failure, not one per retry
            log.warning("leader election: %s", message)
        self._last_error = message


class KubeLeaseStore:
    """`LeaseStore` over the official client (raw JSON, so MicroTime strings pass through untouched)."""

    def __init__(self, api_client: client.ApiClient, *, namespace: str, name: str, timeout_s: float = 5.0):
        self._api: Any = client.CustomObjectsApi(api_client)
        self._namespace = namespace
        self._name = name
        self._timeout = timeout_s

    def get(self) -> LeaseRecord | None:
        try:
            with translated(f"read Lease {self._namespace}/{self._name}"):
                resp = self._api.get_namespaced_custom_object(
                    GROUP, VERSION, self._namespace, PLURAL, self._name,
                    _preload_content=False, _request_timeout=self._timeout,
                )  # fmt: skip
                obj = json.loads(resp.data)
                resp.release_conn()
        except NotFound:
            return None
        spec = obj.get("spec") or {}
        return LeaseRecord(
            holder=spec.get("holderIdentity") or "",
            duration_s=int(spec.get("leaseDurationSeconds") or 0),
            acquired=spec.get("acquireTime") or "",
            renewed=spec.get("renewTime") or "",
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str(obj.get("metadata", {}).get("resourceVersion", "")),
        )

    def create(self, record: LeaseRecord) -> bool:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease", "metadata": {"name": self._name}}
        return self._write(body | {"spec": self._spec(record)}, create=True)

    def update(self, record: LeaseRecord) -> bool:
        meta = {"name": self._name, "namespace": self._namespace, "resourceVersion": record.resource_version}
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease", "metadata": meta}
        return self._write(body | {"spec": self._spec(record)}, create=False)

    def _write(self, body: dict[str, Any], *, create: bool) -> bool:
        what = f"{'create' if create else 'update'} Lease {self._namespace}/{self._name}"
        try:
            with translated(what):
                if create:
                    resp = self._api.create_namespaced_custom_object(
                        GROUP, VERSION, self._namespace, PLURAL, body,
                        _preload_content=False, _request_timeout=self._timeout,
                    )  # fmt: skip
                else:
                    resp = self._api.replace_namespaced_custom_object(
                        GROUP, VERSION, self._namespace, PLURAL, self._name, body,
                        _preload_content=False, _request_timeout=self._timeout,
                    )  # fmt: skip
                resp.read()
                resp.release_conn()
        except Conflict:
            return False  # another replica wrote first: re-read at the next retry
        return True

    @staticmethod
    def _spec(record: LeaseRecord) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": record.duration_s,
            "leaseTransitions": record.transitions,
        }
        if record.acquired:
            spec["acquireTime"] = record.acquired
        if record.renewed:
            spec["renewTime"] = record.renewed
        return spec
