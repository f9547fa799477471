"""List then watch one resource with the official `kubernetes` client (an informer's reflector, small): every
object is handed to `on_event` as raw JSON, again after each relist (the watch expired or broke), and an
object a relist no longer has as DELETED (its deletion fell between two watches)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch

log = logging.getLogger(__name__)

# Short watch windows: each ends within this time, so stop() is prompt; the next one resumes from the last
# resource version, without a relist.
WATCH_WINDOW_S = 2
RELIST_BACKOFF_S = 0.5

OnEvent = Callable[[str, dict[str, Any]], None]  # ("ADDED" | "MODIFIED" | "DELETED", object)


class Reflector:
    def __init__(self, *, name: str, list_fn: Callable[..., Any], on_event: OnEvent) -> None:
        self._name = name
        self._list = list_fn
        self._on_event = on_event
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()  # set once the first list was handed over
        self._known: dict[str, dict[str, Any]] = {}  # uid -> the object as last seen

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"vpcrc-{self._name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=WATCH_WINDOW_S + 3)

    def _run(self) -> None:
        version = ""
        while not self._stopping.is_set():
            try:
                if not version:
                    version = self._relist()
                version = self._watch(version)
            except Exception as exc:  # the API server restarted, or the version expired: relist
                if not self._stopping.is_set():
                    log.info("%s watch: %s; listing again", self._name, exc)
                version = ""
                self._stopping.wait(RELIST_BACKOFF_S)

    def _relist(self) -> str:
        doc = json.loads(self._list(_preload_content=False).data)
        items = {_uid(item): item for item in doc.get("items") or []}
        for uid in set(self._known) - set(items):
            self._hand("DELETED", self._known[uid])
        for item in items.values():
            self._hand("ADDED", item)
        self.synced.set()
        return str(doc["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        stream = watch.Watch()
        for event in stream.stream(
            self._list, resource_version=version, timeout_seconds=WATCH_WINDOW_S, allow_watch_bookmarks=True
        ):
            raw = event.get("raw_object") or {}
            kind = str(event.get("type"))
            if kind == "ERROR":
                raise RuntimeError(f"watch error {raw.get('code')}: {raw.get('message')}")
            if kind != "BOOKMARK":
                self._hand(kind, raw)
            version = str((raw.get("metadata") or {}).get("resourceVersion") or version)
            if self._stopping.is_set():
                stream.stop()
        return version

    def _hand(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self._known.pop(_uid(obj), None)
        else:
            self._known[_uid(obj)] = obj
        self._on_event(kind, obj)


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")
