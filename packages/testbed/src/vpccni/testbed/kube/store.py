"""The testbed API server's object store: one monotonically increasing resourceVersion across all
resources (as etcd's revision), and a bounded event history that watches resume from (so a watch from a
resourceVersion older than the history answers 410 Expired, as a real server does after compaction)."""

from __future__ import annotations

import builtins
import collections
import copy
import datetime
import secrets
import string
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vpccni.testbed.kube import crds
from vpccni.testbed.kube.patches import MERGE_PATCH, STRATEGIC_MERGE_PATCH, PatchError, apply_patch
from vpccni.testbed.kube.registry import ResourceRegistry
from vpccni.testbed.kube.resources import CRDS, ResourceType
from vpccni.testbed.kube.selectors import (
    Selector,
    fields_of,
    labels_of,
    parse_field_selector,
    parse_label_selector,
)

Obj = dict[str, Any]


class StoreError(Exception):
    """An API error with the HTTP code and Status reason a real server would answer."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, name: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.kind = kind


class NotFoundError(StoreError):
    code, reason = 404, "NotFound"


class AlreadyExistsError(StoreError):
    code, reason = 409, "AlreadyExists"


class ForbiddenError(StoreError):
    code, reason = 403, "Forbidden"


class ConflictError(StoreError):
    code, reason = 409, "Conflict"


class ExpiredError(StoreError):
    code, reason = 410, "Expired"


class InvalidError(StoreError):
    code, reason = 422, "Invalid"


class BadRequestError(StoreError):
    code, reason = 400, "BadRequest"


class UnsupportedMediaTypeError(StoreError):
    code, reason = 415, "UnsupportedMediaType"


@dataclass(frozen=True, kw_only=True)
class StoredEvent:
    """One change, as the history keeps it: the object after the change and (for MODIFIED) before it."""

    resource_version: int
    resource_key: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    previous: Obj | None


@dataclass(frozen=True, kw_only=True)
class WatchFilter:
    """What one watch asks for; translates stored events into what that watcher must see."""

    resource: ResourceType
    namespace: str | None = None
    labels: Selector = field(default_factory=Selector)
    fields: Selector = field(default_factory=Selector)

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj.get("metadata", {}).get("namespace") != self.namespace:
            return False
        return self.labels.matches(labels_of(obj)) and self.fields.matches(fields_of(obj, self.fields))

    def translate(self, event: StoredEvent) -> tuple[str, Obj] | None:
        """Like a real server: an object that leaves the selection is DELETED for this watcher, one that
        enters it is ADDED."""
        if event.resource_key != self.resource.key:
            return None
        now, before = self.matches(event.obj), self.matches(event.previous)
        if event.type == "MODIFIED":
            if now and before:
                return "MODIFIED", event.obj
            if now:
                return "ADDED", event.obj
            if before:
                return "DELETED", event.obj
            return None
        return (event.type, event.obj) if now else None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectStore:
    """Thread-safe store of raw (JSON-shaped) objects keyed by (resource, namespace, name).

    Creating, changing or deleting a CustomResourceDefinition changes what ``registry`` serves (deleting
    one deletes its objects, as on a real server)."""

    def __init__(
        self,
        *,
        history_limit: int = 1000,
        clock: Callable[[], str] = _now,
        registry: ResourceRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else ResourceRegistry()
        self._lock = threading.Condition()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._history: collections.deque[StoredEvent] = collections.deque()
        self._history_limit = history_limit
        self._rv = 0
        self._compacted_rv = 0  # watches from an RV below this answer 410
        self._clock = clock

    # -- reads ------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    @property
    def compacted_resource_version(self) -> int:
        with self._lock:
            return self._compacted_rv

    def get(self, resource: ResourceType | str, name: str, namespace: str | None = None) -> Obj:
        res = self.registry.named(resource)
        with self._lock:
            obj = self._objects.get(self._key(res, namespace, name))
            if obj is None:
                raise NotFoundError(f'{res.plural} "{name}" not found', name=name, kind=res.plural)
            return copy.deepcopy(obj)

    def list(
        self,
        resource: ResourceType | str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[builtins.list[Obj], int]:
        """The matching objects (sorted by namespace/name) and the resourceVersion of this snapshot."""
        wf = self.watch_filter(
            resource, namespace, label_selector=label_selector, field_selector=field_selector
        )
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (key, _ns, _name), obj in sorted(self._objects.items())
                if key == wf.resource.key and wf.matches(obj)
            ]
            return items, self._rv

    def watch_filter(
        self,
        resource: ResourceType | str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> WatchFilter:
        try:
            return WatchFilter(
                resource=self.registry.named(resource),
                namespace=namespace,
                labels=parse_label_selector(label_selector),
                fields=parse_field_selector(field_selector),
            )
        except ValueError as exc:
            raise BadRequestError(str(exc)) from exc

    def events_after(
        self, resource_version: int, *, timeout: float, wake: Callable[[], bool]
    ) -> builtins.list[StoredEvent]:
        """Events newer than ``resource_version``; waits up to ``timeout`` for one (or until ``wake()``).

        Raises ExpiredError when the history no longer reaches back to ``resource_version``."""
        with self._lock:
            self._lock.wait_for(lambda: self._rv > resource_version or wake(), timeout=timeout)
            if resource_version < self._compacted_rv:
                raise ExpiredError(f"too old resource version: {resource_version} ({self._compacted_rv})")
            return [e for e in self._history if e.resource_version > resource_version]

    def notify_watchers(self) -> None:
        """Wake every waiting watch (the server uses this to end streams on stop or outage)."""
        with self._lock:
            self._lock.notify_all()

    # -- writes -----------------------------------------------------------------------------------

    def create(
        self, resource: ResourceType | str, obj: Mapping[str, Any], namespace: str | None = None
    ) -> Obj:
        res = self.registry.named(resource)
        new = copy.deepcopy(dict(obj))
        meta = new.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise InvalidError(
                    f"{res.kind} has no metadata.name: set name or generateName", kind=res.plural
                )
            suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
            meta["name"] = meta["generateName"] + suffix
        ns = self._namespace_for(res, namespace or meta.get("namespace"))
        if ns is not None:
            meta["namespace"] = ns
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        with self._lock:
            key = self._key(res, ns, meta["name"])
            if key in self._objects:
                raise AlreadyExistsError(
                    f'{res.plural} "{meta["name"]}" already exists', name=meta["name"], kind=res.plural
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = self._clock()
            meta.setdefault("generation", 1)
            meta.pop("resourceVersion", None)
            served = self._crd_types(res, new)
            created = self._commit(res, key, "ADDED", new, None)
            if served is not None:
                self.registry.define(meta["name"], served)
            return created

    def update(
        self, resource: ResourceType | str, obj: Mapping[str, Any], namespace: str | None = None
    ) -> Obj:
        """PUT semantics: replace the object; a ``metadata.resourceVersion`` in it must be current."""
        res = self.registry.named(resource)
        new = copy.deepcopy(dict(obj))
        meta = new.setdefault("metadata", {})
        with self._lock:
            key = self._key(res, namespace or meta.get("namespace"), meta.get("name", ""))
            current = self._require(res, key)
            self._check_precondition(res, current, meta.get("resourceVersion"))
            return self._replace(res, key, current, new)

    def patch(
        self,
        resource: ResourceType | str,
        name: str,
        patch: Any,
        *,
        content_type: str = MERGE_PATCH,
        namespace: str | None = None,
    ) -> Obj:
        """Apply a patch document; a ``metadata.resourceVersion`` in a merge patch is an optimistic lock."""
        res = self.registry.named(resource)
        if res.custom and content_type.startswith(STRATEGIC_MERGE_PATCH):
            # As on a real server: custom resources have no strategic-merge schema.
            raise UnsupportedMediaTypeError(
                f"the body of the request was in an unknown format - accepted media types include: "
                f"application/json-patch+json, application/merge-patch+json for {res.kind}"
            )
        with self._lock:
            key = self._key(res, namespace, name)
            current = self._require(res, key)
            if isinstance(patch, Mapping):
                self._check_precondition(res, current, (patch.get("metadata") or {}).get("resourceVersion"))
            try:
                new = apply_patch(content_type, current, patch)
            except PatchError as exc:
                raise InvalidError(str(exc), name=name, kind=res.plural) from exc
            return self._replace(res, key, current, new)

    def delete(self, resource: ResourceType | str, name: str, namespace: str | None = None) -> Obj:
        res = self.registry.named(resource)
        with self._lock:
            key = self._key(res, namespace, name)
            current = self._require(res, key)
            del self._objects[key]
            deleted = self._commit(res, None, "DELETED", copy.deepcopy(current), current)
            if res.key == CRDS.key:
                self._drop_custom_objects(self.registry.undefine(name))
            return deleted

    def compact(self) -> None:
        """Drop the whole event history: every watch from an RV older than now answers 410."""
        with self._lock:
            self._history.clear()
            self._compacted_rv = self._rv
            self._lock.notify_all()

    # -- internals --------------------------------------------------------------------------------

    @staticmethod
    def _namespace_for(res: ResourceType, namespace: str | None) -> str | None:
        return (namespace or "default") if res.namespaced else None

    def _key(self, res: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (res.key, self._namespace_for(res, namespace) or "", name)

    def _require(self, res: ResourceType, key: tuple[str, str, str]) -> Obj:
        current = self._objects.get(key)
        if current is None:
            raise NotFoundError(f'{res.plural} "{key[2]}" not found', name=key[2], kind=res.plural)
        return current

    @staticmethod
    def _check_precondition(res: ResourceType, current: Obj, wanted: str | None) -> None:
        have = current["metadata"]["resourceVersion"]
        if wanted and str(wanted) != have:
            name = current["metadata"]["name"]
            raise ConflictError(
                f'Operation cannot be fulfilled on {res.plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                name=name,
                kind=res.plural,
            )

    def _replace(self, res: ResourceType, key: tuple[str, str, str], current: Obj, new: Obj) -> Obj:
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        # Identity fields are the server's, whatever the client sent.
        for ident in ("name", "namespace", "uid", "creationTimestamp"):
            if ident in old_meta:
                meta[ident] = old_meta[ident]
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        if new.get("spec") != current.get("spec"):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        served = self._crd_types(res, new)
        replaced = self._commit(res, key, "MODIFIED", new, current)
        if served is not None:
            self.registry.define(meta["name"], served)
        return replaced

    def _crd_types(self, res: ResourceType, crd: Obj) -> tuple[ResourceType, ...] | None:
        """For a CRD being written: the types it will serve (its status set as the server's controllers
        would); None for any other object. Raises InvalidError for a CRD that cannot be served."""
        if res.key != CRDS.key:
            return None
        try:
            served = crds.resource_types(crd)
        except crds.InvalidCrd as exc:
            raise InvalidError(str(exc), name=crd["metadata"].get("name", ""), kind=res.plural) from exc
        crd["status"] = crds.accepted_status(crd, now=self._clock())
        return served

    def _drop_custom_objects(self, types: tuple[ResourceType, ...]) -> None:
        keys = {r.key: r for r in types}
        for key in [k for k in self._objects if k[0] in keys]:
            current = self._objects.pop(key)
            self._commit(keys[key[0]], None, "DELETED", copy.deepcopy(current), current)

    def _commit(
        self, res: ResourceType, key: tuple[str, str, str] | None, kind: str, new: Obj, previous: Obj | None
    ) -> Obj:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        if key is not None:
            self._objects[key] = new
        self._history.append(
            StoredEvent(
                resource_version=self._rv,
                resource_key=res.key,
                type=kind,
                obj=copy.deepcopy(new),
                previous=copy.deepcopy(previous) if previous is not None else None,
            )
        )
        while len(self._history) > self._history_limit:
            self._compacted_rv = self._history.popleft().resource_version
        self._lock.notify_all()
        return copy.deepcopy(new)
