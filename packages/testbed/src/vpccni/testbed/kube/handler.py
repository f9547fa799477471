"""The HTTP side of the testbed Kubernetes API server: URL routing, JSON bodies, Status errors and
chunked watch streams, as the official clients expect them."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from vpccni.testbed.kube import crds, discovery, openapi, openapi_pb, proxy, resources, tables
from vpccni.testbed.kube.patches import MERGE_PATCH
from vpccni.testbed.kube.registry import ResourceRegistry
from vpccni.testbed.kube.resources import ResourceType
from vpccni.testbed.kube.store import (
    BadRequestError,
    ExpiredError,
    ForbiddenError,
    NotFoundError,
    StoreError,
    WatchFilter,
)

if TYPE_CHECKING:
    from vpccni.testbed.kube.server import KubeApiServer

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Target:
    """What a resource URL points at."""

    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    path: str = ""  # after a proxy subresource: the path to relay


def _status(code: int, reason: str, message: str, *, name: str = "", kind: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name or kind:
        status["details"] = {"name": name, "kind": kind}
    return status


def parse_target(parts: list[str], registry: ResourceRegistry) -> Target | None:
    """``/api/v1/...`` or ``/apis/<group>/<version>/...`` split on ``/``, without the empty first part."""
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] != "status":
        namespace, rest = rest[1], rest[2:]
    proxied = ""
    if len(rest) >= 3 and rest[2] == "proxy":
        rest, proxied = rest[:3], "/" + "/".join(rest[3:])
    if not rest or len(rest) > 3:
        return None
    resource = registry.find(group, version, rest[0])
    if resource is None:
        return None
    if namespace is not None and not resource.namespaced:
        return None
    return Target(
        resource=resource,
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource=rest[2] if len(rest) > 2 else None,
        path=proxied,
    )


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def table_version(accept: str | None) -> str | None:
    """The Table apiVersion the client asked for first in ``Accept`` (kubectl get sends
    ``application/json;as=Table;v=v1;g=meta.k8s.io, ..., application/json``), or None for plain JSON."""
    for media in (accept or "").split(","):
        params = dict(p.strip().split("=", 1) for p in media.split(";")[1:] if "=" in p)
        if (
            params.get("as") == "Table"
            and params.get("g") == "meta.k8s.io"
            and params.get("v") in ("v1", "v1beta1")
        ):
            return f"meta.k8s.io/{params['v']}"
        if media.split(";")[0].strip() in ("application/json", "*/*") and "as" not in params:
            return None
    return None


class KubeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vpccni-testbed-kube"
    owner: KubeApiServer  # set on the subclass the server creates

    # -- plumbing ---------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._track(self.connection, add=False)

    def _send_json(self, code: int, body: Any) -> None:
        self._send_bytes(code, "application/json", json.dumps(body).encode())

    def _send_bytes(self, code: int, content_type: str, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, exc: StoreError) -> None:
        self._send_json(exc.code, _status(exc.code, exc.reason, exc.message, name=exc.name, kind=exc.kind))

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            raise BadRequestError("the request has no body: send the object or patch as JSON")
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BadRequestError(f"the request body is not JSON: {exc}") from exc

    def _drop_connection(self) -> None:
        """Behave like a server that went away: close without an answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- verbs ------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self.owner.request_log.append((method, self.path))
        if not self.owner.available:
            if self.owner.outage_mode == "reset":
                self._drop_connection()
                return
            # Drain the body so the connection stays usable for the client's next request.
            if length := int(self.headers.get("Content-Length") or 0):
                self.rfile.read(length)
            self._send_json(503, _status(503, "ServiceUnavailable", "the testbed API server is unavailable"))
            return
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/") if p]
        try:
            if method == "GET" and self._discovery(parts):
                return
            target = parse_target(parts, self.owner.store.registry)
            if target is None:
                raise NotFoundError(f"the server could not find the requested resource ({method} {url.path})")
            if (method, target.resource.plural) in self.owner.forbidden:
                raise ForbiddenError(
                    f'{target.resource.plural} is forbidden: User "system:serviceaccount:kube-system:'
                    f'aws-node" cannot {method.lower()} resource {target.resource.plural!r}',
                    kind=target.resource.plural,
                )
            self._resource(method, target, query)
        except StoreError as exc:
            self._send_error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug or a malformed body must answer, not hang the client
            log.exception("testbed API server failed on %s %s", method, self.path)
            self._send_json(500, _status(500, "InternalError", f"{type(exc).__name__}: {exc}"))

    def _discovery(self, parts: list[str]) -> bool:
        body: Any
        if parts == ["version"]:
            body = resources.VERSION_INFO
        elif parts in (["healthz"], ["readyz"], ["livez"]):
            self._send_bytes(200, "text/plain", b"ok")
            return True
        elif parts == ["openapi", "v2"]:
            self._openapi()
            return True
        elif parts == ["api"]:
            body = discovery.api_versions()
        elif parts == ["apis"]:
            body = discovery.api_group_list(self.owner.store.registry.served())
        elif len(parts) == 2 and parts[0] == "api":
            body = discovery.api_resource_list(self.owner.store.registry.served(), "", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            body = discovery.api_resource_list(self.owner.store.registry.served(), parts[1], parts[2])
        else:
            return False
        if body is None:
            raise NotFoundError(f"the server could not find the requested resource (/{'/'.join(parts)})")
        self._send_json(200, body)
        return True

    def _resource(self, method: str, target: Target, query: dict[str, str]) -> None:
        store = self.owner.store
        res, ns, name = target.resource, target.namespace, target.name
        if target.subresource == "proxy" and name is not None:
            self._proxy(method, target, name)
            return
        if name is None:
            if method == "GET" and _truthy(query.get("watch")):
                self._watch(target, query)
            elif method == "GET":
                items, rv = store.list(
                    res,
                    ns,
                    label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"),
                )
                if table := self._as_table(res, items, str(rv), query):
                    self._send_json(200, table)
                    return
                self._send_json(
                    200,
                    {
                        "kind": res.list_kind,
                        "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(rv)},
                        "items": items,
                    },
                )
            elif method == "POST":
                self._send_json(201, store.create(res, self.owner.admit(res, self._read_body(), ns), ns))
            else:
                raise BadRequestError(
                    f"{method} is not supported on a collection: name the object in the URL"
                )
            return
        if method == "GET":
            obj = store.get(res, name, ns)
            table = self._as_table(res, [obj], obj["metadata"]["resourceVersion"], query)
            self._send_json(200, table or obj)
        elif method == "PUT":
            body = self._read_body()
            body.setdefault("metadata", {})["name"] = name
            self._send_json(200, store.update(res, body, ns))
        elif method == "PATCH":
            content_type = self.headers.get("Content-Type") or MERGE_PATCH
            self._send_json(
                200, store.patch(res, name, self._read_body(), content_type=content_type, namespace=ns)
            )
        elif method == "DELETE":
            if length := int(self.headers.get("Content-Length") or 0):
                self.rfile.read(length)  # DeleteOptions; not needed here
            self._send_json(200, store.delete(res, name, ns))
        else:
            raise BadRequestError(f"{method} is not supported")

    def _proxy(self, method: str, target: Target, name: str) -> None:
        if target.resource.key != resources.PODS.key or method != "GET":
            raise BadRequestError(
                f"{method} proxy is not supported on {target.resource.plural}: GET a pod's path"
            )
        try:
            pod_name, port = proxy.split_name(name)
            pod = self.owner.store.get(target.resource, pod_name, target.namespace)
            query = urllib.parse.urlsplit(self.path).query
            answer = proxy.proxy_get(
                pod, port, target.path + (f"?{query}" if query else ""), dialer=self.owner.pod_dialer
            )
        except proxy.ProxyError as exc:
            self._send_json(exc.code, _status(exc.code, exc.reason, exc.message))
            return
        self._send_bytes(answer.status, answer.content_type, answer.body)

    def _as_table(
        self, res: ResourceType, objects: list[dict[str, Any]], rv: str, query: dict[str, str]
    ) -> dict[str, Any] | None:
        """The objects as a Table when the client asked for one (kubectl get), else None."""
        version = table_version(self.headers.get("Accept"))
        if version is None:
            return None
        return tables.table(
            res.columns,
            objects,
            resource_version=rv,
            include_object=query.get("includeObject", "PartialObjectMetadata"),
            api_version=version,
        )

    def _openapi(self) -> None:
        """``/openapi/v2`` as protobuf when asked so (kubectl), else as JSON."""
        store = self.owner.store
        served = store.registry.served()
        crd_objects, _ = store.list(resources.CRDS)
        schemas = {
            r.key: crds.openapi_schema(crd, r.version)
            for crd in crd_objects
            for r in store.registry.defined_by(crd["metadata"]["name"])
        }
        doc = openapi.document(served, schemas)
        accept = self.headers.get("Accept") or ""
        if any(t in accept for t in openapi_pb.CONTENT_TYPES):
            self._send_bytes(200, openapi_pb.CONTENT_TYPES[1], openapi_pb.document(doc))
        else:
            self._send_json(200, doc)

    # -- watch ------------------------------------------------------------------------------------

    def _write_event(self, kind: str, obj: dict[str, Any], res: ResourceType, query: dict[str, str]) -> None:
        """A watch event; its object a one-row Table when the watch asked for tables (kubectl get -w)."""
        table = self._as_table(res, [obj], obj["metadata"]["resourceVersion"], query)
        self._write_chunk({"type": kind, "object": table or obj})

    def _write_chunk(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, target: Target, query: dict[str, str]) -> None:
        store, owner = self.owner.store, self.owner
        wf = store.watch_filter(
            target.resource,
            target.namespace,
            label_selector=query.get("labelSelector"),
            field_selector=query.get("fieldSelector"),
        )
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        timeout = float(query.get("timeoutSeconds") or owner.default_watch_timeout)
        requested = query.get("resourceVersion") or "0"
        if not requested.isdigit():
            raise BadRequestError(f"invalid resourceVersion {requested!r}: use a value from a list or watch")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._stream(wf, int(requested), timeout=timeout, bookmarks=bookmarks, query=query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream(
        self, wf: WatchFilter, requested: int, *, timeout: float, bookmarks: bool, query: dict[str, str]
    ) -> None:
        store, owner = self.owner.store, self.owner
        if requested == 0:
            # "0"/unset: start with the current state as synthetic ADDED events, as a real server does.
            items, cursor = store.list(wf.resource, wf.namespace)
            for obj in items:
                if wf.matches(obj):
                    self._write_event("ADDED", obj, wf.resource, query)
        else:
            cursor = requested
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + owner.bookmark_interval

        def interrupted() -> bool:
            return owner.stopping or not owner.available

        while True:
            now = time.monotonic()
            wait = max(0.0, min(deadline, next_bookmark) - now)
            try:
                events = store.events_after(cursor, timeout=wait, wake=interrupted)
            except ExpiredError as exc:
                self._write_chunk({"type": "ERROR", "object": _status(exc.code, exc.reason, exc.message)})
                break
            if interrupted():
                self._drop_connection()
                return
            for event in events:
                translated = wf.translate(event)
                if translated is not None:
                    self._write_event(translated[0], translated[1], wf.resource, query)
                cursor = event.resource_version
            now = time.monotonic()
            if bookmarks and (now >= next_bookmark or now >= deadline):
                self._write_chunk(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": wf.resource.kind,
                            "apiVersion": wf.resource.api_version,
                            "metadata": {"resourceVersion": str(cursor)},
                        },
                    }
                )
                next_bookmark = now + owner.bookmark_interval
            if now >= deadline:
                break
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
