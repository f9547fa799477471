"""Keeps the PolicyEndpoint objects equal to what each NetworkPolicy resolves to.

Watch events only mark policies dirty: a policy change marks that policy; a pod change the policies of its
namespace and those with namespace selectors (or rules without peers); a namespace change the latter; a
PolicyEndpoint change its policy (someone edited or deleted an object we own). One worker thread waits for
dirty policies, lets a short batch window collect what arrives with them, and reconciles each against the
current snapshots: create what is missing, replace specs that differ, delete what no policy wants. Our own
writes go into the PolicyEndpoint cache at once, so the next round does not write them again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vpccni.k8sapi.errors import Conflict, K8sApiError, NotFound
from vpccni.netpol import networkpolicy, policyendpoint
from vpccni.netpol.controller.cluster import ClusterPod, Namespace
from vpccni.netpol.controller.resolve import Cluster, resolve
from vpccni.netpol.kube import Key, ObjectCache, PolicyEndpointWriter
from vpccni.netpol.model import PolicyEndpoint
from vpccni.netpol.networkpolicy import NetworkPolicy, PolicyError
from vpccni.netpol.settings import ControllerSettings

log = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed API write


@dataclass(frozen=True, kw_only=True)
class InvalidPolicy:
    """A NetworkPolicy that could not be parsed (its PolicyEndpoints are left as they are)."""

    namespace: str
    name: str
    reason: str


Policy = NetworkPolicy | InvalidPolicy


def parse_policy(obj: dict[str, Any]) -> Policy:
    try:
        return networkpolicy.from_json(obj)
    except PolicyError as exc:
        meta = obj.get("metadata") or {}
        return InvalidPolicy(
            namespace=str(meta.get("namespace")), name=str(meta.get("name")), reason=str(exc)
        )


@dataclass(frozen=True, kw_only=True)
class RoundStats:
    policies: int
    created: int
    updated: int
    deleted: int
    seconds: float


def owner_reference(policy: NetworkPolicy) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "name": policy.name,
        "uid": policy.uid,
        "blockOwnerDeletion": True,
        "controller": True,
    }


class PolicyEndpointReconciler:
    def __init__(
        self,
        *,
        policies: ObjectCache[Policy],
        pods: ObjectCache[ClusterPod],
        namespaces: ObjectCache[Namespace],
        endpoints: ObjectCache[PolicyEndpoint],
        writer: PolicyEndpointWriter,
        settings: ControllerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policies = policies
        self._pods = pods
        self._namespaces = namespaces
        self._endpoints = endpoints
        self._writer = writer
        self._settings = settings or ControllerSettings()
        self._clock = clock
        self._cond = threading.Condition()
        self._dirty: set[Key] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._local = threading.local()  # `own` is set while the worker files its own writes
        self.rounds = 0

    # -- change listeners (called from watcher threads) --------------------------------------------
    def mark(self, keys: Sequence[Key]) -> None:
        with self._cond:
            self._dirty.update(keys)
            self._cond.notify_all()

    def mark_all(self) -> None:
        keys = [p_key for p_key in self._policies.snapshot()]
        keys += [(pe.policy_ref.namespace, pe.policy_ref.name) for pe in self._endpoints.values()]
        self.mark(keys)

    def on_policies(self, changes: Sequence[tuple[Key, Any, Any]]) -> None:
        self.mark([key for key, _, _ in changes])

    def on_pods(self, changes: Sequence[tuple[Key, Any, Any]]) -> None:
        namespaces = {key[0] for key, _, _ in changes}
        self.mark(
            [
                key
                for key, policy in self._policies.snapshot().items()
                if key[0] in namespaces or (isinstance(policy, NetworkPolicy) and policy.has_namespace_peers)
            ]
        )

    def on_namespaces(self, changes: Sequence[tuple[Key, Any, Any]]) -> None:
        self.mark(
            [
                key
                for key, policy in self._policies.snapshot().items()
                if isinstance(policy, NetworkPolicy) and policy.has_namespace_peers
            ]
        )

    def on_endpoints(self, changes: Sequence[tuple[Key, Any, Any]]) -> None:
        if getattr(self._local, "own", False):
            return  # our own write, filed as it returned: nothing to reconcile
        keys = []
        for _, before, after in changes:
            for pe in (before, after):
                if isinstance(pe, PolicyEndpoint):
                    keys.append((pe.policy_ref.namespace, pe.policy_ref.name))
        self.mark(keys)

    # -- the worker --------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pe-reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        for cache in (self._policies, self._pods, self._namespaces, self._endpoints):
            while not cache.synced.wait(0.2):
                if self._stop.is_set():
                    return
        self.mark_all()
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: bool(self._dirty) or self._stop.is_set())
            if self._stop.is_set():
                return
            self._stop.wait(self._settings.batch_s)
            with self._cond:
                dirty, self._dirty = self._dirty, set()
            failed = self.reconcile(dirty)
            if failed:
                self.mark(sorted(failed))
                self._stop.wait(RETRY_S)

    def reconcile(self, keys: set[Key]) -> set[Key]:
        """One round over `keys`; returns the policies that failed (to retry)."""
        started = self._clock()
        policies = self._policies.snapshot()
        cluster = Cluster(self._pods.values(), self._namespaces.values())
        existing: dict[Key, list[PolicyEndpoint]] = defaultdict(list)
        for pe in self._endpoints.values():
            existing[(pe.policy_ref.namespace, pe.policy_ref.name)].append(pe)
        failed: set[Key] = set()
        counts = [0, 0, 0]
        for key in sorted(keys):
            policy = policies.get(key)
            if isinstance(policy, InvalidPolicy):
                log.error(
                    "NetworkPolicy %s/%s is invalid, leaving its PolicyEndpoints: %s", *key, policy.reason
                )
                continue
            try:
                done = self._sync(policy, existing.get(key, []), cluster)
            except K8sApiError as exc:
                log.warning("PolicyEndpoints of %s/%s not written (retrying): %s", *key, exc)
                failed.add(key)
                continue
            counts = [a + b for a, b in zip(counts, done, strict=True)]
        self.rounds += 1
        stats = RoundStats(
            policies=len(keys),
            created=counts[0],
            updated=counts[1],
            deleted=counts[2],
            seconds=self._clock() - started,
        )
        if any(counts):
            log.info(
                "reconciled %d policies in %.0f ms: %d PolicyEndpoints created, %d updated, %d deleted",
                stats.policies, stats.seconds * 1000, stats.created, stats.updated, stats.deleted,
            )  # fmt: skip
        return failed

    def _sync(
        self, policy: NetworkPolicy | None, existing: list[PolicyEndpoint], cluster: Cluster
    ) -> tuple[int, int, int]:
        desired = [] if policy is None else resolve(policy, cluster, chunk_size=self._settings.chunk_size)
        have = {pe.name: pe for pe in existing}
        created = updated = deleted = 0
        for pe in desired:
            spec = policyendpoint.spec_json(pe)
            current = have.pop(pe.name, None)
            if current is None:
                assert policy is not None
                self._create(pe, spec, policy)
                created += 1
            elif policyendpoint.spec_json(current) != spec:
                self._file(self._writer.replace_spec(pe.namespace, pe.name, spec))
                updated += 1
        for stale in have.values():
            try:
                self._writer.delete(stale.namespace, stale.name)
            except NotFound:
                pass
            self._local.own = True
            try:
                self._endpoints.drop(stale.key)
            finally:
                self._local.own = False
            deleted += 1
        return created, updated, deleted

    def _create(self, pe: PolicyEndpoint, spec: dict[str, Any], policy: NetworkPolicy) -> None:
        body = {
            "apiVersion": policyendpoint.API_VERSION,
            "kind": policyendpoint.KIND,
            "metadata": {
                "name": pe.name,
                "namespace": pe.namespace,
                "ownerReferences": [owner_reference(policy)],
            },
            "spec": spec,
        }
        try:
            self._file(self._writer.create(pe.namespace, body))
        except Conflict:
            # Made by an earlier round whose watch event has not arrived yet: replace its spec instead.
            self._file(self._writer.replace_spec(pe.namespace, pe.name, spec))

    def _file(self, obj: dict[str, Any]) -> None:
        """Put what the API server answered into the cache now (its watch event comes later, equal)."""
        self._local.own = True
        try:
            self._endpoints.put(obj)
        finally:
            self._local.own = False
