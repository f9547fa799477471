"""An IMDSv2 HTTP server: PUT /latest/api/token issues a session token; every GET needs a live token."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vpccni.testbed.imds.metadata import Snapshot, lookup

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TTL = 21600
POLL_INTERVAL = 0.05  # how often the serving loop checks for shutdown


class Outage(Enum):
    NONE = "none"
    REFUSE = "refuse"  # the listener goes away: connections are refused
    HTTP_503 = "http503"


class TokenStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def issue(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._expiry = {t: e for t, e in self._expiry.items() if e > now}
            self._expiry[token] = now + ttl
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            return token is not None and self._expiry.get(token, 0.0) > self._clock()


class _Handler(BaseHTTPRequestHandler):
    server: _ImdsHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("IMDS %s", format % args)

    def _reply(self, status: int, body: str = "", content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _imds(self) -> ImdsServer | None:
        """The instance this request is for (a gateway for many instances routes by path)."""
        return self.server.imds

    def do_PUT(self) -> None:
        imds = self._imds()
        if imds is None:
            return self._reply(404, "Not Found")
        if imds.outage is Outage.HTTP_503:
            return self._reply(503, "Service Unavailable")
        if self.path != "/latest/api/token":
            return self._reply(404, "Not Found")
        try:
            ttl = int(self.headers.get(TTL_HEADER, ""))
        except ValueError:
            return self._reply(400, "Bad Request: missing or invalid " + TTL_HEADER)
        if not 1 <= ttl <= MAX_TTL:
            return self._reply(400, f"Bad Request: {TTL_HEADER} must be 1..{MAX_TTL}")
        token = imds.tokens.issue(ttl)
        self.send_response(200)
        self.send_header(TTL_HEADER, str(ttl))
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(token)))
        self.end_headers()
        self.wfile.write(token.encode())

    def do_GET(self) -> None:
        imds = self._imds()
        if imds is None:
            return self._reply(404, "Not Found")
        if imds.outage is Outage.HTTP_503:
            return self._reply(503, "Service Unavailable")
        if not imds.tokens.valid(self.headers.get(TOKEN_HEADER)):
            return self._reply(401, "Unauthorized")
        snapshot = imds.snapshot()
        path = self.path.split("?", 1)[0]
        if snapshot is None:
            return self._reply(404, "Not Found")
        if path == "/latest/dynamic/instance-identity/document":
            return self._reply(200, json.dumps(_identity(snapshot)), "application/json")
        if path in ("/latest", "/latest/"):
            return self._reply(200, "dynamic\nmeta-data")
        prefix = "/latest/meta-data/"
        if not (path + "/").startswith(prefix):
            return self._reply(404, "Not Found")
        value = lookup(snapshot, path[len(prefix) :])
        if value is None:
            return self._reply(404, "Not Found")
        return self._reply(200, value)


def _identity(snap: Snapshot) -> dict[str, str]:
    return {
        "instanceId": snap["instance-id"],
        "instanceType": snap["instance-type"],
        "availabilityZone": snap["placement/availability-zone"],
        "region": snap["placement/region"],
        "privateIp": snap.get("local-ipv4", ""),
        "imageId": snap.get("ami-id", ""),
    }


class _ImdsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    imds: ImdsServer

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # A borrowed socket cannot be unbound and rebound; drop connections instead during an outage.
        return self.imds.outage is not Outage.REFUSE


class ImdsServer:
    """Serves `snapshot()` (None = instance gone) on host:port, or on an already-bound listening socket."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot | None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        tokens: TokenStore | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.tokens = tokens or TokenStore()
        self.outage = Outage.NONE
        self._host, self._port, self._sock = host, port, sock
        self._http: _ImdsHttpServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> None:
        with self._lock:
            self._serve()

    def _serve(self) -> None:
        if self._sock is not None:
            http = _ImdsHttpServer(self._sock.getsockname()[:2], _Handler, bind_and_activate=False)
            http.socket.close()
            http.socket = self._sock
        else:
            http = _ImdsHttpServer((self._host, self._port), _Handler)
        http.imds = self
        self._host, self._port = http.server_address[:2]  # type: ignore[assignment]
        self._http = http
        self._thread = threading.Thread(
            target=http.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name="testbed-imds",
            daemon=True,
        )
        self._thread.start()

    def _halt(self, *, close_socket: bool) -> None:
        if self._http is not None:
            self._http.shutdown()
            if close_socket:
                self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def set_outage(self, outage: Outage) -> None:
        with self._lock:
            previous, self.outage = self.outage, outage
            if self._sock is not None or (self._http is None and previous is not Outage.REFUSE):
                return
            if outage is Outage.REFUSE and previous is not Outage.REFUSE:
                self._halt(close_socket=True)  # nothing listens: the kernel refuses connections
            elif previous is Outage.REFUSE and outage is not Outage.REFUSE:
                self._serve()

    def stop(self) -> None:
        with self._lock:
            self._halt(close_socket=True)
