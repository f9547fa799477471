"""The gRPC server on `<run dir>/ipamd.sock` (and optionally TCP 127.0.0.1:50051 for ≤ v1.22 clients).

Started only after node init, as upstream, so a SERVING health answer means ipamd is initialised. The
socket's directory is created, a stale socket removed, and the socket made 0660 (root and the group).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from vpccni.ipamd.sockets import remove_stale_socket

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.aws-node"


@dataclass(frozen=True, kw_only=True)
class GrpcServerSettings:
    socket_path: Path
    tcp_address: str = ""  # "127.0.0.1:50051" serves there too; "" does not
    socket_mode: int = 0o660
    workers: int = 16


class GrpcServer:
    """Owns the grpc.Server; services are registered through `register` callables before `start()`."""

    def __init__(
        self,
        *,
        settings: GrpcServerSettings,
        register: tuple[Callable[[grpc.Server], None], ...] = (),
    ) -> None:
        self._settings = settings
        self._register = register
        self._server: grpc.Server | None = None
        self._health = health.HealthServicer()

    @property
    def socket_path(self) -> Path:
        return self._settings.socket_path

    def start(self) -> None:
        s = self._settings
        s.socket_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_socket(s.socket_path)
        server = grpc.server(ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="grpc"))
        for register in self._register:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if not server.add_insecure_port(f"unix:{s.socket_path}"):
            raise OSError(f"cannot listen on {s.socket_path}: check that its directory is writable")
        if s.tcp_address and not server.add_insecure_port(s.tcp_address):
            raise OSError(
                f"cannot listen on {s.tcp_address} (VPCCNI_GRPC_TCP_ADDRESS): is another process using it?"
            )
        server.start()
        os.chmod(s.socket_path, s.socket_mode)
        self._server = server
        self.set_serving(True)
        log.info("gRPC server on unix:%s%s", s.socket_path, f" and {s.tcp_address}" if s.tcp_address else "")

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self._health.set(HEALTH_SERVICE, status)

    def stop(self, grace_s: float = 5.0) -> None:
        """Refuse new calls, let running ones finish (at most `grace_s`), remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self.set_serving(False)
        server.stop(grace_s).wait(grace_s + 1.0)
        try:
            os.unlink(self._settings.socket_path)
        except FileNotFoundError:
            pass


