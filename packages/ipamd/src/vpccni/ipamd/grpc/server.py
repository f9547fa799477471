"""The gRPC server on `<run dir>/ipamd.sock` (and optionally loopback TCP such as 127.0.0.1:50051).

Started only after node init, as upstream, so a SERVING health answer means ipamd is initialised. The
socket's directory is created, a stale socket removed, and the socket made 0660 (root and the group). With
`allowed_uids` set (ipamd sets it), the server itself listens in a directory only root can enter and a
`PeerGuard` owns the public path, letting through only peers of those uids (`SO_PEERCRED`). On TCP, where
no peer credentials exist, the backend refuses `CNIBackend` calls (see `backend`): health probes and the
read-only config service answer there.
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
from vpccni.ipamd.grpc.peerguard import PeerGuard
from vpccni.ipamd.sockets import remove_stale_socket
from vpccni.rpc.malformed import RefuseMalformedRequests

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.aws-node"
PRIVATE_DIR = ".ipamd-grpc"  # beside the public socket, 0700: only root reaches the server directly


@dataclass(frozen=True, kw_only=True)
class GrpcServerSettings:
    socket_path: Path
    tcp_address: str = ""  # "127.0.0.1:50051" serves there too; "" does not
    socket_mode: int = 0o660
    workers: int = 16
    allowed_uids: frozenset[int] | None = None  # None: no peer check (tests of the services alone)


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
        self._guard: PeerGuard | None = None
        self._health = health.HealthServicer()

    @property
    def socket_path(self) -> Path:
        return self._settings.socket_path

    def start(self) -> None:
        s = self._settings
        s.socket_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_socket(s.socket_path)
        listen_path = s.socket_path
        if s.allowed_uids is not None:
            private = s.socket_path.parent / PRIVATE_DIR
            private.mkdir(mode=0o700, exist_ok=True)
            os.chmod(private, 0o700)
            listen_path = private / s.socket_path.name
            remove_stale_socket(listen_path)
        server = grpc.server(
            ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="grpc"),
            interceptors=(RefuseMalformedRequests(),),
        )
        for register in self._register:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if not server.add_insecure_port(f"unix:{listen_path}"):
            raise OSError(f"cannot listen on {listen_path}: check that its directory is writable")
        if s.tcp_address and not server.add_insecure_port(s.tcp_address):
            raise OSError(
                f"cannot listen on {s.tcp_address} (VPCCNI_GRPC_TCP_ADDRESS): is another process using it?"
            )
        server.start()
        if s.allowed_uids is not None:
            self._guard = PeerGuard(
                public_path=s.socket_path, private_path=listen_path, allowed_uids=s.allowed_uids,
                socket_mode=s.socket_mode,
            )  # fmt: skip
            self._guard.start()
        else:
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
        if self._guard is not None:
            self._guard.stop()  # no new connections from here on
            self._guard = None
        server.stop(grace_s).wait(grace_s + 1.0)
        try:
            os.unlink(self._settings.socket_path)
        except FileNotFoundError:
            pass
