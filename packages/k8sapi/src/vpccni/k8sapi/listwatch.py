"""Keeps a local copy of one collection current: list, then watch from the list's resourceVersion with
bookmarks; on 410 Gone relist; on any outage back off, reconnect and resume (or relist if the server's
history no longer reaches back). What to do with the objects is the `WatchSink`'s business."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from vpccni.k8sapi.backoff import DEFAULT_BACKOFF, ReconnectBackoff
from vpccni.k8sapi.corev1 import CoreV1Requests
from vpccni.k8sapi.errors import ApiUnavailable, Expired, K8sApiError, translated

log = logging.getLogger(__name__)

Raw = dict[str, Any]


class WatchSink(Protocol):
    """Receives the collection's raw objects; the watcher calls it from its own thread."""

    @property
    def resource_version(self) -> str:
        """The last resourceVersion applied (a resume point after an outage)."""
        ...

    def replace_all(self, objects: Sequence[Raw], *, resource_version: str) -> None: ...

    def upsert(self, obj: Raw, *, resource_version: str) -> None: ...

    def remove(self, obj: Raw, *, resource_version: str) -> None: ...

    def mark_current(self, resource_version: str) -> None:
        """A bookmark: nothing changed up to `resource_version`."""
        ...


def _lines(resp: Any) -> Iterator[str]:
    """Split a chunked watch body into JSON lines as chunks arrive."""
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if buffer.strip():
        yield buffer.decode("utf-8", errors="replace")


class ListWatcher:
    """List-and-watch of `path` (e.g. ``/apis/networking.k8s.io/v1/networkpolicies``) into `sink`."""

    def __init__(
        self,
        requests: CoreV1Requests,
        sink: WatchSink,
        *,
        path: str,
        what: str,
        field_selector: str = "",
        watch_timeout_s: int = 300,
        request_timeout_s: float = 10.0,
        backoff: ReconnectBackoff = DEFAULT_BACKOFF,
    ) -> None:
        self._requests = requests
        self._sink = sink
        self._path = path
        self._what = what
        self._selector = field_selector
        self._watch_timeout_s = watch_timeout_s
        self._request_timeout_s = request_timeout_s
        self._backoff = backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp: Any = None
        self._resp_lock = threading.Lock()
        self.relists = 0  # how many full lists were done (observability, tests)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"k8s-watch-{self._what}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._resp_lock:
            resp = self._resp
        if resp is not None:
            # Unblock a read waiting for the next watch event.
            sock = getattr(getattr(resp, "connection", None), "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    # -- loop -------------------------------------------------------------------------------------

    def _run(self) -> None:
        rv = ""
        failures = 0
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._relist()
                rv, received = self._watch(rv)
                failures = 0
                if not received:
                    # A server that ends watches at once must not turn this loop into a busy loop.
                    self._stop.wait(self._backoff.initial_s)
            except Expired:
                log.info("%s watch resourceVersion %s expired; relisting", self._what, rv)
                rv = ""
            except K8sApiError as exc:
                if self._stop.is_set():
                    break  # stop() cut the stream: not an outage
                # Resume from the last event applied before the failure, not the watch's start.
                rv = self._sink.resource_version if rv else rv
                failures += 1
                delay = self._backoff.delay(failures)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "%s watch interrupted (%s); retrying in %.1fs (keeping the cache)",
                    self._what,
                    exc,
                    delay,
                )
                self._stop.wait(delay)
            except Exception:
                failures += 1
                log.exception("%s watcher failed unexpectedly; relisting", self._what)
                rv = ""
                self._stop.wait(self._backoff.delay(failures))

    def _relist(self) -> str:
        with translated(f"list {self._what}"):
            resp = self._requests.list_collection(
                self._path, field_selector=self._selector, timeout=self._request_timeout_s
            )
            body = json.loads(resp.data)
            resp.release_conn()
        rv = str(body.get("metadata", {}).get("resourceVersion", ""))
        items = body.get("items") or []
        self._sink.replace_all(items, resource_version=rv)
        self.relists += 1
        log.debug("listed %d %s at resourceVersion %s", len(items), self._what, rv)
        return rv

    def _watch(self, rv: str) -> tuple[str, int]:
        """One watch request; returns the resourceVersion to resume from and how many events arrived."""
        received = 0
        with translated(f"watch {self._what}"):
            resp = self._requests.list_collection(
                self._path,
                field_selector=self._selector,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout_s,
                watch=True,
                # The read timeout bounds how long a silently dead server can hold the watch.
                timeout=(self._request_timeout_s, self._watch_timeout_s + self._request_timeout_s),
            )
            with self._resp_lock:
                self._resp = resp
            try:
                for line in _lines(resp):
                    rv = self._apply(json.loads(line), rv)
                    received += 1
                    if self._stop.is_set():
                        break
            finally:
                with self._resp_lock:
                    self._resp = None
                # Never pool a connection that may still carry part of a watch stream.
                resp.close()
                resp.release_conn()
        return rv, received

    def _apply(self, event: dict[str, Any], rv: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            if code == 410:
                raise Expired(f"watch: {obj.get('message', 'resourceVersion expired')}", status=410)
            raise ApiUnavailable(
                f"watch error {code}: {obj.get('reason')}: {obj.get('message')}", status=code
            )
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
        if kind == "BOOKMARK":
            self._sink.mark_current(new_rv)
        elif kind in ("ADDED", "MODIFIED"):
            self._sink.upsert(obj, resource_version=new_rv)
        elif kind == "DELETED":
            self._sink.remove(obj, resource_version=new_rv)
        return new_rv
