"""A gRPC server on a Unix socket (and optionally a TCP address) with the standard health service.

The socket's directory is created, a stale socket from an earlier run removed (anything else at that path is
an operator error), and the socket made `socket_mode` (0660: root and the group) once it listens.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from vpccni.rpc.malformed import RefuseMalformedRequests

log = logging.getLogger(__name__)


def remove_stale_socket(path: str | Path) -> None:
    """A socket left by a previous run is removed; anything else at that path is an operator error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket: remove it or set another VPCCNI_RUN_DIR")
    os.unlink(path)


class UnixGrpcServer:
    def __init__(
        self,
        *,
        socket_path: Path,
        health_service: str,
        register: Sequence[Callable[[grpc.Server], None]],
        tcp_address: str = "",
        socket_mode: int = 0o660,
        workers: int = 8,
    ) -> None:
        self.socket_path = socket_path
        self._health_service = health_service
        self._register = tuple(register)
        self._tcp_address = tcp_address
        self._socket_mode = socket_mode
        self._workers = workers
        self._server: grpc.Server | None = None
        self._health = health.HealthServicer()

    def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_socket(self.socket_path)
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="grpc"),
            interceptors=(RefuseMalformedRequests(),),
        )
        for register in self._register:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if not server.add_insecure_port(f"unix:{self.socket_path}"):
            raise OSError(f"cannot listen on {self.socket_path}: check that its directory is writable")
        if self._tcp_address and not server.add_insecure_port(self._tcp_address):
            raise OSError(f"cannot listen on {self._tcp_address}: is another process using it?")
        server.start()
        os.chmod(self.socket_path, self._socket_mode)
        self._server = server
        self.set_serving(True)
        tcp = f" and {self._tcp_address}" if self._tcp_address else ""
        log.info("gRPC %s on unix:%s%s", self._health_service, self.socket_path, tcp)

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self._health.set(self._health_service, status)

    def stop(self, grace_s: float = 5.0) -> None:
        """Refuse new calls, let running ones finish (at most `grace_s`), remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self.set_serving(False)
        server.stop(grace_s).wait(grace_s + 1.0)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
