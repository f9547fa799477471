"""The pod proxy subresource (``GET /api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>``): the API
server relays a GET to the pod, as ``kubectl get --raw`` and upstream's cni-metrics-helper use it.

How the server reaches a pod is the ``PodDialer`` it is given: by default a TCP connection to the pod's IP
from wherever the server runs; a testbed cluster dials from inside the pod's node namespace (its pods'
addresses are routed there, as a real API server reaches them through the node)."""

from __future__ import annotations

import errno
import http.client
import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PodDialer = Callable[[Mapping[str, Any], str, int], socket.socket]
TIMEOUT_S = 10.0


class ProxyError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass(frozen=True, kw_only=True)
class ProxyAnswer:
    status: int
    content_type: str
    body: bytes


def split_name(name: str) -> tuple[str, int]:
    """``pod``, ``pod:port`` or ``scheme:pod:port`` (only http is served)."""
    parts = name.split(":")
    if len(parts) == 3:
        if parts[0] not in ("", "http"):
            raise ProxyError(
                400, "BadRequest", f"scheme {parts[0]!r} is not supported by this server: use http"
            )
        parts = parts[1:]
    pod = parts[0]
    try:
        port = int(parts[1]) if len(parts) > 1 and parts[1] else 80
    except ValueError:
        raise ProxyError(400, "BadRequest", f"invalid port in {name!r}: use <pod>:<number>") from None
    return pod, port


def default_dialer(pod: Mapping[str, Any], ip: str, port: int) -> socket.socket:
    """Loopback only: test traffic never leaves the machine; a cluster with node namespaces gives a dialer
    that reaches its pods there."""
    try:
        loopback = ipaddress.ip_address(ip).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise OSError(
            errno.EHOSTUNREACH, f"no route to {ip} from the testbed API server (no node runs the pod)"
        )
    return socket.create_connection((ip, port), timeout=TIMEOUT_S)


class _DialedConnection(http.client.HTTPConnection):
    def __init__(self, sock: socket.socket, host: str) -> None:
        super().__init__(host, timeout=TIMEOUT_S)
        self.sock = sock

    def connect(self) -> None:  # already connected by the dialer
        pass


def proxy_get(pod: Mapping[str, Any], port: int, path: str, *, dialer: PodDialer) -> ProxyAnswer:
    ip = str((pod.get("status") or {}).get("podIP") or "")
    if not ip:
        name = (pod.get("metadata") or {}).get("name", "")
        raise ProxyError(503, "ServiceUnavailable", f'pod "{name}" has no IP yet: it is not running')
    try:
        sock = dialer(pod, ip, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ProxyError(
            503,
            "ServiceUnavailable",
            f"error trying to reach service: dial tcp {ip}:{port}: connect: {reason}",
        ) from None
    conn = _DialedConnection(sock, f"{ip}:{port}")
    try:
        conn.request("GET", path, headers={"Accept": "*/*"})
        response = conn.getresponse()
        body = response.read()
        return ProxyAnswer(
            status=response.status,
            content_type=response.getheader("Content-Type") or "application/octet-stream",
            body=body,
        )
    except (OSError, http.client.HTTPException) as exc:
        raise ProxyError(503, "ServiceUnavailable", f"error trying to reach service: {exc}") from None
    finally:
        conn.close()
