"""The introspection HTTP server (default `127.0.0.1:61679`, or `unix:<path>`), upstream's paths and JSON.

`GET /` lists the paths; `/v1/enis` is each card's ENIInfos with containerID and ifName scrubbed (as upstream
since v1.23.0, so nobody can forge a DelNetwork from it); `/v1/eni-configs` the node's ENIConfig name;
`/v1/networkutils-env-settings` and `/v1/ipamd-env-settings` upstream's variable sets. `/v1/pool` is vpccni's
own: the warm-pool status (targets, free, cooldown, last decision and why). `/v1/pods` (upstream's path until
v1.9) lists every pod attachment: the datastore's and the branch-ENI pods' (ENI, VLAN), without container ids.

`HttpEndpoint` is the small stdlib server introspection and metrics share (read/write timeouts, TCP or Unix).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vpccni.ipamd.datastore.model import AssignedAddress
from vpccni.ipamd.datastore.records import route_table_id
from vpccni.ipamd.datastore.views import go_time
from vpccni.ipamd.nodeinit import InitOptions
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.pool.status import PoolStatus

_log = logging.getLogger(__name__)

NETWORKUTILS_ENV = (
    "AWS_VPC_K8S_CNI_CONNMARK",
    "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
    "AWS_VPC_K8S_CNI_EXTERNALSNAT",
    "AWS_EXTERNAL_SERVICE_CIDRS",
    "AWS_VPC_ENI_MTU",
    "AWS_VPC_K8S_CNI_VETHPREFIX",
    "AWS_VPC_CNI_NODE_PORT_SUPPORT",
    "AWS_VPC_K8S_CNI_RANDOMIZESNAT",
)
IPAMD_ENV = (
    "WARM_IP_TARGET",
    "WARM_ENI_TARGET",
    "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG",
    "AWS_MANAGE_ENIS_NON_SCHEDULABLE",
    "ENABLE_SUBNET_DISCOVERY",
)

_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 60.0
_POLL_S = 0.2  # how soon stop() takes effect

Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Response]


class _Handler(BaseHTTPRequestHandler):
    server_version = "vpccni"
    routes: Mapping[str, Route] = {}
    timeout = 5.0  # read timeout per request (BaseHTTPRequestHandler applies it to the socket)

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            status, ctype, body = 404, "text/plain; charset=utf-8", b"404 page not found\n"
        else:
            try:
                status, ctype, body = route()
            except Exception:
                _log.exception("introspection handler for %s failed", self.path)
                status, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:  # Unix sockets have no peer address
        return str(self.client_address[0]) if self.client_address else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, _ = super().get_request()
        return conn, ("unix", 0)


class HttpEndpoint:
    """A GET-only HTTP server on `host:port` or `unix:/path`; `start()` binds and serves on a thread."""

    def __init__(
        self,
        *,
        bind_address: str,
        routes: Mapping[str, Route],
        timeout_s: float = 5.0,
        name: str = "http",
        retry_first_s: float = _RETRY_FIRST_S,
    ) -> None:
        self._bind = bind_address
        self._handler = type("Handler", (_Handler,), {"routes": dict(routes), "timeout": timeout_s})
        self._name = name
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None
        self._retry: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._retry_first_s = retry_first_s

    @property
    def serving(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> str:
        """The bound address (`host:port` with the real port, or `unix:/path`)."""
        if isinstance(self._server, ThreadingHTTPServer):
            host, port = self._server.server_address[:2]
            return f"{host!s}:{port}"
        return self._bind

    def start(self) -> None:
        """Bind and serve. If the address is taken, keep retrying in the background (1 s doubling to 60 s,
        as upstream) rather than failing ipamd: these endpoints are diagnostics, not the data path."""
        if self._server is not None or self._retry is not None:
            return
        self._stopping.clear()
        try:
            self._serve(self._bind_server())
        except OSError as exc:
            _log.warning(
                "%s server cannot listen on %s (%s); retrying in the background", self._name, self._bind, exc
            )
            self._retry = threading.Thread(target=self._retry_bind, name=f"{self._name}-bind", daemon=True)
            self._retry.start()

    def stop(self) -> None:
        self._stopping.set()
        retry, self._retry = self._retry, None
        if retry is not None:
            retry.join(timeout=5)
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if self._bind.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._bind[len("unix:") :])

    def _bind_server(self) -> socketserver.BaseServer:
        if self._bind.startswith("unix:"):
            path = self._bind[len("unix:") :]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a stale socket from a previous run
            return _UnixHTTPServer(path, self._handler)
        host, _, port = self._bind.rpartition(":")
        return ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), self._handler)

    def _serve(self, server: socketserver.BaseServer) -> None:
        with self._lock:
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, args=(_POLL_S,), name=self._name, daemon=True
            )
            self._thread.start()
        _log.info("%s server listening on %s", self._name, self.address)

    def _retry_bind(self) -> None:
        delay = self._retry_first_s
        while not self._stopping.wait(delay):
            try:
                server = self._bind_server()
            except OSError as exc:
                _log.debug("%s server still cannot listen on %s: %s", self._name, self._bind, exc)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            if self._stopping.is_set():
                server.server_close()
            else:
                self._serve(server)
            return


def json_response(value: object) -> Response:
    return 200, "application/json", json.dumps(value).encode()


def scrub_eni_infos(infos: Mapping[str, Any]) -> dict[str, Any]:
    """Blank containerID and ifName in every IPAMKey (upstream v1.23.0), IPv6 pods' too."""
    out = copy.deepcopy(dict(infos))
    for eni in out.get("ENIs", {}).values():
        for cidr in [*eni.get("AvailableIPv4Cidrs", {}).values(), *eni.get("IPv6Cidrs", {}).values()]:
            for addr in cidr.get("IPAddresses", {}).values():
                key = addr.get("IPAMKey")
                if isinstance(key, dict):
                    key["containerID"] = ""
                    key["ifName"] = ""
    return out


@dataclass(frozen=True, kw_only=True)
class IntrospectionSources:
    """Where each view comes from; callables so the server always shows the current state."""

    eni_infos: Callable[[], Mapping[int, Mapping[str, Any]]]  # network card → ENIInfos (unscrubbed)
    eni_config_name: Callable[[], str]
    networkutils_env: Callable[[], Mapping[str, str]]
    ipamd_env: Callable[[], Mapping[str, str]]
    pool_status: Callable[[], Mapping[str, Any]]
    pods: Callable[[], list[dict[str, Any]]]  # every pod attachment (`pod_view` rows)


def introspection_routes(sources: IntrospectionSources) -> dict[str, Route]:
    routes: dict[str, Route] = {
        "/v1/enis": lambda: json_response(
            {str(card): scrub_eni_infos(info) for card, info in sources.eni_infos().items()}
        ),
        "/v1/eni-configs": lambda: json_response(sources.eni_config_name()),
        "/v1/networkutils-env-settings": lambda: json_response(dict(sources.networkutils_env())),
        "/v1/ipamd-env-settings": lambda: json_response(dict(sources.ipamd_env())),
        "/v1/pool": lambda: json_response(dict(sources.pool_status())),
        "/v1/pods": lambda: json_response(sources.pods()),
    }
    paths = ["/", *routes]
    routes["/"] = lambda: json_response({"AvailableCommands": paths})
    return routes


def pod_view(
    *,
    namespace: str,
    name: str,
    ip: str,
    eni_id: str,
    device_number: int,
    route_table: int,
    assigned_ns: int,
    network_card: int = 0,
    vlan_id: int = 0,
    mac: str = "",
) -> dict[str, Any]:
    """One `/v1/pods` row (a multi-NIC pod has one per card); `vlanId` 0 for a pod on the node's ENIs, else
    its branch ENI's VLAN."""
    return {
        "namespace": namespace,
        "name": name,
        "ip": ip,
        "networkCard": network_card,
        "eniId": eni_id,
        "deviceNumber": device_number,
        "routeTableId": route_table,
        "vlanId": vlan_id,
        "branchEniMac": mac,
        "assignedTime": go_time(assigned_ns),
    }


def datastore_pod_views(assigned: Iterable[AssignedAddress]) -> list[dict[str, Any]]:
    return [
        pod_view(
            namespace=a.metadata.namespace,
            name=a.metadata.name,
            ip=str(a.ip),
            eni_id=a.eni_id,
            device_number=a.device_number,
            route_table=route_table_id(a.device_number, a.network_card),
            assigned_ns=a.assigned_at_ns,
            network_card=a.network_card,
        )
        for a in assigned
    ]


def pool_view(
    *, snapshot: PoolSnapshot, status: PoolStatus, targets: InitOptions, last_decision: str = ""
) -> dict[str, Any]:
    """`/v1/pool`: the warm targets, what the pool holds now and why it is (not) changing."""
    return {
        "targets": {
            "WARM_ENI_TARGET": targets.warm_eni_target,
            "WARM_IP_TARGET": targets.warm_ip_target,
            "MINIMUM_IP_TARGET": targets.minimum_ip_target,
            "WARM_PREFIX_TARGET": targets.warm_prefix_target,
            "ENABLE_PREFIX_DELEGATION": targets.prefix_delegation,
        },
        "enis": len(snapshot.enis),
        "totalIPs": snapshot.total_ips,
        "assignedIPs": snapshot.assigned_ips,
        "availableIPs": snapshot.available_ips,
        "inCooldown": sum(e.in_cooldown for e in snapshot.usable_enis),
        "totalPrefixes": snapshot.total_prefixes,
        "freePrefixes": snapshot.free_prefixes,
        "state": status.state.value,
        "subnetIDs": list(status.subnet_ids),
        "retryAfterSeconds": status.retry_after_s,
        "reason": status.message,
        "detail": status.detail,
        "lastDecision": last_decision,
    }


class IntrospectionServer:
    """Upstream's introspection endpoint. Constructing it does no I/O; `start()` binds."""

    def __init__(
        self, *, sources: IntrospectionSources, bind_address: str = "127.0.0.1:61679", timeout_s: float = 5.0
    ) -> None:
        self._endpoint = HttpEndpoint(
            bind_address=bind_address,
            routes=introspection_routes(sources),
            timeout_s=timeout_s,
            name="introspection",
        )

    @property
    def address(self) -> str:
        return self._endpoint.address

    def start(self) -> None:
        self._endpoint.start()

    def stop(self) -> None:
        self._endpoint.stop()
