"""One IMDS endpoint for many instances: `http://host:port/<instance-id>` serves that instance's metadata.

A node's real IMDS is 169.254.169.254 inside the instance; the fleet simulation runs hundreds of agents
without a network namespace each, so each agent is given `AWS_EC2_METADATA_SERVICE_ENDPOINT` with its
instance id as the path prefix. Behind the prefix it is the same IMDSv2 server (tokens, lag, outages).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from vpccni.testbed.imds.metadata import Snapshot
from vpccni.testbed.imds.server import POLL_INTERVAL, ImdsServer, _Handler, _ImdsHttpServer


class _GatewayHandler(_Handler):
    server: _GatewayHttpServer

    def _imds(self) -> ImdsServer | None:
        instance_id, _, rest = self.path.lstrip("/").partition("/")
        found = self.server.instances.get(instance_id)
        if found is not None:
            self.path = "/" + rest
        return found


class _GatewayHttpServer(_ImdsHttpServer):
    instances: dict[str, ImdsServer]
    request_queue_size = 1024  # hundreds of agents share this listener

    def verify_request(self, request: object, client_address: object) -> bool:
        return True  # outages are per instance (HTTP 503); the gateway itself stays up


class ImdsGateway:
    """Serves every added instance under its own path prefix; `endpoint(instance_id)` is what to give it."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._instances: dict[str, ImdsServer] = {}
        self._http: _GatewayHttpServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, instance_id: str, snapshot: Callable[[], Snapshot | None]) -> str:
        """Serve `snapshot()` for this instance; returns its endpoint."""
        self._instances[instance_id] = ImdsServer(snapshot)  # not started: the gateway answers for it
        return self.endpoint(instance_id)

    def endpoint(self, instance_id: str) -> str:
        return f"http://{self._host}:{self._port}/{instance_id}"

    def start(self) -> None:
        http = _GatewayHttpServer((self._host, self._port), _GatewayHandler)
        http.instances = self._instances
        self._host, self._port = http.server_address[:2]  # type: ignore[assignment]
        self._http = http
        self._thread = threading.Thread(
            target=http.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name="imds-gateway",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
