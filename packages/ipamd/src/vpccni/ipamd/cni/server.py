"""The CNI endpoint: a Unix socket server for the aws-cni shim (``vpccni.cniplugin.wire``).

``start()`` binds the socket (mode 0660), drains the DEL queue while connections wait in the backlog, then
serves: each connection is checked with ``SO_PEERCRED`` (uid 0 or a configured uid) and handled on a
worker thread. The queue is drained again periodically, for DELs queued in the moment before the socket
existed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from vpccni.cniplugin import wire
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import DEFAULT_CNI_SOCKET, DEFAULT_DEL_QUEUE_DIR
from vpccni.ipamd.cni.delqueue_drain import drain_del_queue
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.sockets import remove_stale_socket

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EndpointSettings:
    socket_path: str = DEFAULT_CNI_SOCKET
    del_queue_dir: str = DEFAULT_DEL_QUEUE_DIR
    socket_mode: int = 0o660
    allowed_uids: frozenset[int] = field(default_factory=lambda: frozenset({0}))
    workers: int = 16
    # Reading one request may not take longer than this (a stuck client must not hold a worker).
    read_timeout_s: float = 10.0
    redrain_interval_s: float = 60.0


class CniEndpoint:
    def __init__(
        self,
        *,
        service: CniService,
        settings: EndpointSettings | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._service = service
        self._settings = settings or EndpointSettings()
        self._executor = executor
        self._own_executor = executor is None
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def socket_path(self) -> str:
        return self._settings.socket_path

    def start(self) -> None:
        s = self._settings
        os.makedirs(os.path.dirname(s.socket_path) or "/", exist_ok=True)
        remove_stale_socket(s.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(s.socket_path)
        os.chmod(s.socket_path, s.socket_mode)
        sock.listen(128)
        sock.settimeout(0.5)
        self._sock = sock
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="cni")
        # Before serving: a pod's DEL that waited on disk must not race a new ADD for its address.
        self.drain()
        self._spawn(self._accept_loop, "cni-accept")
        self._spawn(self._redrain_loop, "cni-redrain")
        log.info("CNI endpoint listening on %s", s.socket_path)

    def drain(self) -> None:
        drain_del_queue(self._settings.del_queue_dir, self._service.delete_queued)

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=True)
        try:
            os.unlink(self._settings.socket_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> CniEndpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals --------------------------------------------------------------------------------------

    def _spawn(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._sock is not None and self._executor is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            try:
                self._executor.submit(self._serve, conn)
            except RuntimeError:  # executor shut down while stopping
                conn.close()

    def _redrain_loop(self) -> None:
        while not self._stopping.wait(self._settings.redrain_interval_s):
            try:
                self.drain()
            except Exception:
                log.exception("draining the DEL queue failed")

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self._settings.read_timeout_s)
            try:
                pid, uid, _ = wire.peer_credentials(conn)
            except OSError as exc:
                log.warning("CNI connection without peer credentials refused: %s", exc)
                return
            if uid not in self._settings.allowed_uids:
                log.warning("CNI request from pid %d uid %d refused: not an allowed uid", pid, uid)
                refusal = f"uid {uid} may not use the CNI endpoint: run aws-cni as root (as runtimes do)"
                self._answer(conn, error=CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, refusal))
                return
            try:
                request, fd = wire.recv_request(conn)
            except CNIError as err:
                self._answer(conn, error=err)
                return
            except (wire.WireError, OSError) as exc:
                log.warning("unreadable CNI request from pid %d: %s", pid, exc)
                return
            try:
                conn.settimeout(request.timeout_s)
                result = self._service.handle(request, fd)
            except CNIError as err:
                log.info("%s %s/%s: error %d: %s", request.command, request.container_id, request.ifname,
                         err.code, err.msg)  # fmt: skip
                self._answer(conn, error=err)
            except Exception as exc:
                log.exception("%s for container %s failed", request.command, request.container_id)
                self._answer(conn, error=CNIError(ErrorCode.INTERNAL, f"ipamd: {type(exc).__name__}: {exc}"))
            else:
                self._answer(conn, result=result)
            finally:
                if fd is not None:
                    os.close(fd)

    @staticmethod
    def _answer(conn: socket.socket, *, result: object = None, error: CNIError | None = None) -> None:
        try:
            if error is not None:
                wire.send_error(conn, error)
            else:
                wire.send_ok(conn, result)
        except (OSError, wire.WireError) as exc:
            # The shim is gone (timed out); for ADD the runtime sends DEL next, which cleans up.
            log.warning("could not answer the CNI request: %s", exc)
