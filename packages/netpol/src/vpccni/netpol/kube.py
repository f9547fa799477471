"""Kubernetes plumbing shared by the controller and the agent: parsed caches of watched collections, and the
PolicyEndpoint writes.

`ObjectCache` is the `WatchSink` a `vpccni.k8sapi.listwatch.ListWatcher` fills: it parses each raw object
once, keeps the newest by resourceVersion, and tells its listeners what changed, so a reconciler
can wake up and look at a consistent snapshot.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from kubernetes import client
from vpccni.k8sapi.corev1 import CoreV1Requests
from vpccni.k8sapi.errors import translated
from vpccni.k8sapi.listwatch import ListWatcher, Raw
from vpccni.netpol import policyendpoint

log = logging.getLogger(__name__)

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
ChangeListener = Callable[[Sequence[tuple[Key, T | None, T | None]]], None]


def object_key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _rv(obj: Mapping[str, Any]) -> int | None:
    text = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else None


class ObjectCache(Generic[T]):
    """Thread-safe (namespace, name) -> parsed object. Listeners receive (key, before, after) triples
    (after None: deleted) from the watcher's thread, outside the cache's lock."""

    def __init__(self, parse: Callable[[Raw], T]) -> None:
        self._parse = parse
        self._listeners: list[ChangeListener[T]] = []
        self._lock = threading.Lock()
        self._items: dict[Key, T] = {}
        self._versions: dict[Key, int | None] = {}
        self._rv = ""
        self.synced = threading.Event()

    def listen(self, listener: ChangeListener[T]) -> None:
        """Call `listener` with every change from now on (attach before the watch starts)."""
        self._listeners.append(listener)

    # -- reads
    @property
    def resource_version(self) -> str:
        with self._lock:
            return self._rv

    def snapshot(self) -> dict[Key, T]:
        with self._lock:
            return dict(self._items)

    def get(self, key: Key) -> T | None:
        with self._lock:
            return self._items.get(key)

    def values(self) -> list[T]:
        with self._lock:
            return [self._items[k] for k in sorted(self._items)]

    # -- WatchSink
    def replace_all(self, objects: Sequence[Raw], *, resource_version: str) -> None:
        parsed = {object_key(o): (self._parse(o), _rv(o)) for o in objects}
        with self._lock:
            before = self._items
            self._items = {k: v for k, (v, _) in parsed.items()}
            self._versions = {k: rv for k, (_, rv) in parsed.items()}
            self._rv = resource_version
            changes = [
                (k, before.get(k), self._items.get(k))
                for k in sorted(set(before) | set(self._items))
                if before.get(k) != self._items.get(k)
            ]
        self.synced.set()
        self._notify(changes)

    def upsert(self, obj: Raw, *, resource_version: str) -> None:
        self.put(obj)
        with self._lock:
            self._rv = resource_version

    def remove(self, obj: Raw, *, resource_version: str) -> None:
        key = object_key(obj)
        with self._lock:
            self._rv = resource_version
            before = self._items.pop(key, None)
            self._versions.pop(key, None)
        if before is not None:
            self._notify([(key, before, None)])

    def mark_current(self, resource_version: str) -> None:
        with self._lock:
            self._rv = resource_version

    # -- write-through for our own writes (their watch events may come later)
    def put(self, obj: Raw) -> None:
        """Store `obj` unless the cache already holds a newer version of it (an old watch event)."""
        key, version = object_key(obj), _rv(obj)
        parsed = self._parse(obj)
        with self._lock:
            have = self._versions.get(key)
            if version is not None and have is not None and version < have:
                return
            before = self._items.get(key)
            self._items[key] = parsed
            self._versions[key] = version
        if before != parsed:
            self._notify([(key, before, parsed)])

    def drop(self, key: Key) -> None:
        with self._lock:
            before = self._items.pop(key, None)
            self._versions.pop(key, None)
        if before is not None:
            self._notify([(key, before, None)])

    def _notify(self, changes: list[tuple[Key, T | None, T | None]]) -> None:
        if changes:
            for listener in self._listeners:
                listener(changes)


def start_watch(
    requests: CoreV1Requests, cache: ObjectCache[Any], *, path: str, what: str, field_selector: str = ""
) -> ListWatcher:
    watcher = ListWatcher(requests, cache, path=path, what=what, field_selector=field_selector)
    watcher.start()
    return watcher


JSON_PATCH = "application/json-patch+json"
PE_PATH = f"/apis/{policyendpoint.GROUP}/{policyendpoint.VERSION}/{policyendpoint.PLURAL}"


class PolicyEndpointWriter(Protocol):
    """Creates, replaces and deletes PolicyEndpoint objects; each returns the server's object."""

    def create(self, namespace: str, body: Raw) -> Raw: ...

    def replace_spec(self, namespace: str, name: str, spec: Raw) -> Raw: ...

    def delete(self, namespace: str, name: str) -> None: ...


class KubePolicyEndpointWriter:
    """`PolicyEndpointWriter` over the official client's CustomObjectsApi (raw JSON in and out)."""

    def __init__(self, api_client: client.ApiClient, *, timeout_s: float = 10.0) -> None:
        self._custom: Any = client.CustomObjectsApi(api_client)
        self._timeout = timeout_s
        self._resource = (policyendpoint.GROUP, policyendpoint.VERSION)

    def create(self, namespace: str, body: Raw) -> Raw:
        with translated(f"create PolicyEndpoint {namespace}/{body['metadata']['name']}"):
            resp = self._custom.create_namespaced_custom_object(
                *self._resource, namespace, policyendpoint.PLURAL, body,
                _preload_content=False, _request_timeout=self._timeout,
            )  # fmt: skip
            return self._json(resp)

    def replace_spec(self, namespace: str, name: str, spec: Raw) -> Raw:
        # A JSON patch replaces the spec whole (a merge patch would merge the selector's maps).
        body = [{"op": "replace", "path": "/spec", "value": spec}]
        with translated(f"patch PolicyEndpoint {namespace}/{name}"):
            resp = self._custom.patch_namespaced_custom_object(
                *self._resource, namespace, policyendpoint.PLURAL, name, body,
                _content_type=JSON_PATCH, _preload_content=False, _request_timeout=self._timeout,
            )  # fmt: skip
            return self._json(resp)

    def delete(self, namespace: str, name: str) -> None:
        with translated(f"delete PolicyEndpoint {namespace}/{name}"):
            resp = self._custom.delete_namespaced_custom_object(
                *self._resource, namespace, policyendpoint.PLURAL, name,
                _preload_content=False, _request_timeout=self._timeout,
            )  # fmt: skip
            resp.read()
            resp.release_conn()

    @staticmethod
    def _json(resp: Any) -> Raw:
        data = resp.data
        resp.release_conn()
        return dict(json.loads(data))
