"""The CNI endpoint: a Unix socket server for the aws-cni shim (``vpccni.cniplugin.wire``).

``start()`` binds the socket (mode 0660), drains the DEL queue while connections wait in the backlog, then
serves. One I/O thread accepts, checks each peer with ``SO_PEERCRED`` (uid 0 or a configured uid) and reads
requests without blocking; only a complete request goes to the bounded work queue, so idle or slow clients
never hold a worker, and a connection that has not sent its request within ``read_timeout_s`` of its accept
is closed. Each request has one deadline from its accept: a worker that takes it too late, or finds its
caller gone, drops it, and an ADD whose answer cannot be delivered is rolled back (the runtime sees a
failed ADD and would DEL it anyway). The DEL queue is drained again every few seconds, for DELs the shim
queued while ipamd was restarting or overloaded.

``stop()`` is bounded: no new connections, requests still waiting are dropped unanswered (the shim queues
a DEL on disk and reports an ADD as try-again-later), in-flight ones get ``stop_grace_s`` to finish.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vpccni.cniplugin import wire
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import DEFAULT_CNI_SOCKET, DEFAULT_DEL_QUEUE_DIR
from vpccni.ipamd.cni.delqueue_drain import drain_del_queue
from vpccni.ipamd.cni.framing import RequestReader
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.sockets import remove_stale_socket

log = logging.getLogger(__name__)

_GONE = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


@dataclass(frozen=True, kw_only=True)
class EndpointSettings:
    socket_path: str = DEFAULT_CNI_SOCKET
    del_queue_dir: str = DEFAULT_DEL_QUEUE_DIR
    socket_mode: int = 0o660
    allowed_uids: frozenset[int] = field(default_factory=lambda: frozenset({0}))
    workers: int = 16
    backlog: int = 1024
    # A connection must deliver its whole request this soon after its accept (the shim sends at once).
    read_timeout_s: float = 5.0
    # Connections still sending their request; beyond this the oldest are closed.
    max_reading: int = 1024
    # Complete requests waiting for a worker; beyond this the request is answered "try again later".
    max_queued: int = 512
    # A request is dropped once less than this is left of the shim's own deadline.
    answer_margin_s: float = 2.0
    stop_grace_s: float = 5.0
    redrain_interval_s: float = 5.0


@dataclass(kw_only=True, eq=False)
class _Incoming:
    """A connection whose request is still arriving."""

    conn: socket.socket
    pid: int
    accepted: float
    reader: RequestReader = field(default_factory=RequestReader)

    def close(self) -> None:
        self.reader.close()
        self.conn.close()


@dataclass(kw_only=True, eq=False)
class _Job:
    """A complete request, its netns fd and its connection, waiting for or held by a worker."""

    conn: socket.socket
    pid: int
    request: wire.Request
    fd: int | None
    answer_by: float  # monotonic

    def close(self) -> None:
        if self.fd is not None:
            wire.close_fd(self.fd)
            self.fd = None
        self.conn.close()


class CniEndpoint:
    def __init__(
        self,
        *,
        service: CniService,
        settings: EndpointSettings | None = None,
        worker_init: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_add_queued: Callable[[int], None] = lambda delta: None,
    ) -> None:
        self._service = service
        # +1 when an ADD is queued for a worker, -1 when a worker takes it: the pool grows for queued ADDs
        # too (with every worker waiting for addresses, the queue holds most of a burst's demand).
        self._on_add_queued = on_add_queued
        self._settings = settings or EndpointSettings()
        self._worker_init = worker_init  # e.g. tests: enter the test's node namespace first
        self._monotonic = monotonic
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._jobs: queue.Queue[_Job | None] = queue.Queue(self._settings.max_queued)
        self._io_thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._redrain: threading.Thread | None = None
        self._drain_lock = threading.Lock()
        self.dropped = 0  # requests dropped unanswered: caller gone, deadline passed, stopping

    @property
    def socket_path(self) -> str:
        return self._settings.socket_path

    @property
    def queued(self) -> int:
        """Complete requests waiting for a worker."""
        return self._jobs.qsize()

    def start(self) -> None:
        s = self._settings
        os.makedirs(os.path.dirname(s.socket_path) or "/", exist_ok=True)
        remove_stale_socket(s.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(s.socket_path)
        os.chmod(s.socket_path, s.socket_mode)
        sock.listen(s.backlog)
        sock.setblocking(False)
        self._sock = sock
        # Before serving: a pod's DEL that waited on disk must not race a new ADD for its address.
        self.drain()
        self._workers = [self._spawn(self._work, f"cni-{i}") for i in range(s.workers)]
        self._io_thread = self._spawn(self._io_loop, "cni-io")
        self._redrain = self._spawn(self._redrain_loop, "cni-redrain")
        log.info("CNI endpoint listening on %s", s.socket_path)

    def drain(self) -> None:
        with self._drain_lock:
            drain_del_queue(self._settings.del_queue_dir, self._service.delete_queued)

    def stop(self) -> None:
        """Stop within about ``stop_grace_s``: refuse new work, drop what waits, let in-flight work end."""
        started = self._monotonic()
        self._stopping.set()
        if self._io_thread is not None:
            self._io_thread.join(timeout=2.0)  # it closes the listener and the connections still reading
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                if job.request.command == "ADD":
                    self._on_add_queued(-1)
                self._drop(job, "ipamd is stopping")
        for _ in self._workers:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:  # pragma: no cover - the queue was just emptied
                break
        deadline = started + self._settings.stop_grace_s
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - self._monotonic()))
        busy = sum(worker.is_alive() for worker in self._workers)
        if busy:
            log.warning("CNI endpoint stopped with %d request(s) still running", busy)
        if self._redrain is not None:
            self._redrain.join(timeout=1.0)
        try:
            os.unlink(self._settings.socket_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> CniEndpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the I/O thread ---------------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _io_loop(self) -> None:
        assert self._sock is not None
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ, None)
        reading: dict[socket.socket, _Incoming] = {}  # in accept order: the oldest first
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.2):
                    if key.data is None:
                        self._accept_all(selector, reading)
                    else:
                        self._read(selector, reading, key.data)
                self._expire(selector, reading)
        finally:
            self._sock.close()
            for incoming in reading.values():
                incoming.close()
            selector.close()

    def _accept_all(self, selector: selectors.BaseSelector, reading: dict[socket.socket, _Incoming]) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: leave the rest in the backlog for now
                log.warning("accepting a CNI connection failed: %s", exc)
                return
            conn.setblocking(False)
            pid = self._allowed_peer(conn)
            if pid is None:
                conn.close()
                continue
            reading[conn] = _Incoming(conn=conn, pid=pid, accepted=self._monotonic())
            selector.register(conn, selectors.EVENT_READ, reading[conn])
            while len(reading) > self._settings.max_reading:
                oldest = next(iter(reading.values()))
                log.debug("closing the oldest CNI connection still sending (pid %d)", oldest.pid)
                self._forget(selector, reading, oldest)

    def _allowed_peer(self, conn: socket.socket) -> int | None:
        """The peer's pid when its uid may use the endpoint; a refused peer gets an answer saying why."""
        try:
            pid, uid, _ = wire.peer_credentials(conn)
        except OSError as exc:
            log.warning("CNI connection without peer credentials refused: %s", exc)
            return None
        if uid in self._settings.allowed_uids:
            return pid
        log.warning("CNI request from pid %d uid %d refused: not an allowed uid", pid, uid)
        refusal = f"uid {uid} may not use the CNI endpoint: run aws-cni as root (as runtimes do)"
        _send_quietly(conn, CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, refusal))
        return None

    def _read(
        self, selector: selectors.BaseSelector, reading: dict[socket.socket, _Incoming], incoming: _Incoming
    ) -> None:
        try:
            request = incoming.reader.feed(incoming.conn)
        except CNIError as err:
            _send_quietly(incoming.conn, err)
            self._forget(selector, reading, incoming)
            return
        except (wire.WireError, OSError) as exc:
            log.warning("unreadable CNI request from pid %d: %s", incoming.pid, exc)
            self._forget(selector, reading, incoming)
            return
        if request is None:
            return
        selector.unregister(incoming.conn)
        del reading[incoming.conn]
        job = _Job(
            conn=incoming.conn, pid=incoming.pid, request=request, fd=incoming.reader.take_fd(),
            answer_by=incoming.accepted + request.timeout_s - self._settings.answer_margin_s,
        )  # fmt: skip
        try:
            self._jobs.put_nowait(job)
            if request.command == "ADD":
                self._on_add_queued(1)
        except queue.Full:
            busy = f"ipamd is overloaded ({self._settings.max_queued} CNI requests waiting): try again later"
            log.warning("%s %s refused: %s", request.command, request.container_id, busy)
            _send_quietly(job.conn, CNIError(ErrorCode.TRY_AGAIN_LATER, busy))
            job.close()

    def _expire(self, selector: selectors.BaseSelector, reading: dict[socket.socket, _Incoming]) -> None:
        cutoff = self._monotonic() - self._settings.read_timeout_s
        while reading:
            oldest = next(iter(reading.values()))
            if oldest.accepted > cutoff:
                return
            log.debug("CNI connection of pid %d sent no complete request in time: closed", oldest.pid)
            self._forget(selector, reading, oldest)

    @staticmethod
    def _forget(
        selector: selectors.BaseSelector, reading: dict[socket.socket, _Incoming], incoming: _Incoming
    ) -> None:
        selector.unregister(incoming.conn)
        del reading[incoming.conn]
        incoming.close()

    # --- workers ----------------------------------------------------------------------------------------

    def _work(self) -> None:
        if self._worker_init is not None:
            self._worker_init()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.request.command == "ADD":
                self._on_add_queued(-1)
            try:
                self._run(job)
            except Exception:  # a worker never dies of one request
                log.exception("CNI %s of %s failed", job.request.command, job.request.container_id)
            finally:
                job.close()

    def _run(self, job: _Job) -> None:
        request = job.request
        if self._stopping.is_set():
            self._drop(job, "ipamd is stopping")
            return
        late = self._monotonic() - job.answer_by
        if late >= 0:
            self._drop(job, f"it waited {late:.1f}s past its deadline")
            return
        if _peer_gone(job.conn):
            self._drop(job, "aws-cni gave up on it")
            return
        try:
            result = self._service.handle(request, job.fd, answer_by=job.answer_by)
        except CNIError as err:
            log.info("%s %s/%s: error %d: %s", request.command, request.container_id, request.ifname,
                     err.code, err.msg)  # fmt: skip
            self._answer(job, error=err)
        except Exception as exc:
            log.exception("%s for container %s failed", request.command, request.container_id)
            self._answer(job, error=CNIError(ErrorCode.INTERNAL, f"ipamd: {type(exc).__name__}: {exc}"))
        else:
            if not self._answer(job, result=result) and request.command == "ADD":
                log.warning("the ADD of container %s (%s) was not delivered: rolling it back",
                            request.container_id, request.ifname)  # fmt: skip
                self._service.abandon_add(request, job.fd)

    def _answer(self, job: _Job, *, result: object = None, error: CNIError | None = None) -> bool:
        """Send the answer within what is left of the deadline; False when it did not reach the shim."""
        if _peer_gone(job.conn):
            return False
        job.conn.settimeout(max(0.5, job.answer_by + self._settings.answer_margin_s - self._monotonic()))
        try:
            if error is not None:
                wire.send_error(job.conn, error)
            else:
                wire.send_ok(job.conn, result)
        except (OSError, wire.WireError) as exc:
            log.warning("could not answer the CNI %s: %s", job.request.command, exc)
            return False
        return True

    def _drop(self, job: _Job, why: str) -> None:
        """Close without an answer: the shim reports ADD as try-again-later and queues a DEL on disk."""
        self.dropped += 1
        log.warning("dropping CNI %s of container %s (%s) unanswered: %s", job.request.command,
                    job.request.container_id, job.request.ifname, why)  # fmt: skip
        job.close()

    def _redrain_loop(self) -> None:
        while not self._stopping.wait(self._settings.redrain_interval_s):
            try:
                self.drain()
            except Exception:
                log.exception("draining the DEL queue failed")


def _peer_gone(conn: socket.socket) -> bool:
    """Whether the shim closed its end (it sends nothing after the request, so any event means EOF)."""
    poller = select.poll()
    poller.register(conn, select.POLLIN | _GONE)
    try:
        events = poller.poll(0)
    except OSError:
        return True
    if not events:
        return False
    revents = events[0][1]
    if revents & _GONE:
        return True
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _send_quietly(conn: socket.socket, error: CNIError) -> None:
    """An error answer from the I/O thread: one small frame that fits the socket buffer, never waited for."""
    try:
        conn.setblocking(False)
        wire.send_error(conn, error)
    except (OSError, wire.WireError):
        pass
