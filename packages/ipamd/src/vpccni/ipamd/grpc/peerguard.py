"""The gate in front of the gRPC server's Unix socket: only peers whose uid may use ipamd get through.

grpcio cannot tell who is at the other end of a Unix socket, and ``CNIBackend.DelNetwork`` releases a live
pod's address, so the socket's file mode must not be the only guard (a hostPath or an operator's chmod can
loosen it). The gRPC server therefore listens on a socket in a directory only root can enter, and this
relay owns the public path: it checks each connection's ``SO_PEERCRED`` as the CNI endpoint does, then
splices its bytes to the server unchanged, in both directions, on one thread.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from vpccni.cniplugin import wire
from vpccni.ipamd.sockets import remove_stale_socket

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
# Stop reading from one side while this much is waiting to be written to the other.
_HIGH_WATER = 1 << 20


@dataclass(eq=False)
class _Side:
    sock: socket.socket
    pending: bytearray = field(default_factory=bytearray)  # bytes waiting to be written to this side
    peer: _Side | None = None
    eof: bool = False  # nothing more will come from this side
    events: int = 0  # what the selector watches for (0: not registered)


class PeerGuard:
    """Relays connections from ``public_path`` to ``private_path`` for peers whose uid is allowed."""

    def __init__(
        self, *, public_path: Path, private_path: Path, allowed_uids: frozenset[int], socket_mode: int = 0o660
    ) -> None:
        self._public = public_path
        self._private = private_path
        self._allowed = allowed_uids
        self._mode = socket_mode
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sides: set[_Side] = set()  # both ends of every relayed connection
        self.refused = 0

    def start(self) -> None:
        remove_stale_socket(self._public)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self._public))
        os.chmod(self._public, self._mode)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, name="grpc-peerguard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        try:
            os.unlink(self._public)
        except FileNotFoundError:
            pass

    # --- the relay ----------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, events in self._selector.select(timeout=0.2):
                    if key.data is None:
                        self._accept()
                    else:
                        self._pump(key.data, events)
        finally:
            if self._listener is not None:
                self._listener.close()
            for side in list(self._sides):
                self._close(side)
            self._selector.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accepting a gRPC connection failed: %s", exc)
                return
            pid, uid, _gid = wire.peer_credentials(conn)
            if uid not in self._allowed:
                self.refused += 1
                log.warning("gRPC connection from pid %d uid %d refused: not an allowed uid", pid, uid)
                conn.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(self._private))
            except OSError as exc:
                log.warning("the gRPC server is not reachable on %s: %s", self._private, exc)
                upstream.close()
                conn.close()
                continue
            client, server = _Side(conn), _Side(upstream)
            client.peer, server.peer = server, client
            self._sides.update((client, server))
            for side in (client, server):
                side.sock.setblocking(False)
                self._watch(side)

    def _pump(self, side: _Side, events: int) -> None:
        peer = side.peer
        assert peer is not None
        if events & selectors.EVENT_WRITE:
            self._flush(side)
        if events & selectors.EVENT_READ:
            try:
                data: bytes | None = side.sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                side.eof = True
                if not peer.pending:
                    _shutdown_write(peer)
            elif data:
                peer.pending += data
                self._flush(peer)
        if side.eof and peer.eof and not side.pending and not peer.pending:
            self._close(side)
            return
        self._watch(side)
        self._watch(peer)

    def _flush(self, side: _Side) -> None:
        try:
            sent = side.sock.send(side.pending) if side.pending else 0
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the other end is gone: nothing more goes either way
            side.pending.clear()
            side.eof = True
            assert side.peer is not None
            side.peer.eof = True
            side.peer.pending.clear()
            return
        del side.pending[:sent]
        if not side.pending and side.peer is not None and side.peer.eof:
            _shutdown_write(side)

    def _watch(self, side: _Side) -> None:
        """Read while the other side keeps up; write while bytes wait for this side."""
        peer = side.peer
        assert peer is not None
        wanted = 0
        if not side.eof and len(peer.pending) < _HIGH_WATER:
            wanted |= selectors.EVENT_READ
        if side.pending:
            wanted |= selectors.EVENT_WRITE
        if wanted == side.events:
            return
        if side.events == 0:
            self._selector.register(side.sock, wanted, side)
        elif wanted == 0:
            self._selector.unregister(side.sock)
        else:
            self._selector.modify(side.sock, wanted, side)
        side.events = wanted

    def _close(self, side: _Side) -> None:
        for one in (side, side.peer):
            if one is None:
                continue
            if one.events:
                self._selector.unregister(one.sock)
                one.events = 0
            one.sock.close()
            self._sides.discard(one)


def _shutdown_write(side: _Side) -> None:
    try:
        side.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
