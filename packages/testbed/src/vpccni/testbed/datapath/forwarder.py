"""A small threaded TCP forwarder: connections accepted on a socket inside a node namespace are relayed to a
server listening on the root namespace's loopback (the testbed's EC2 and Kubernetes API servers).

The listening socket was created inside the node namespace; the outgoing connections are made by this
process's ordinary threads, which stay in the root namespace, so they reach 127.0.0.1 of the root.
"""

from __future__ import annotations

import logging
import socket
import threading
from contextlib import suppress

log = logging.getLogger(__name__)

_CHUNK = 65536


class TcpForwarder:
    """Relays every connection accepted on `listener` to `target` (host, port) until `stop()`."""

    def __init__(self, *, listener: socket.socket, target: tuple[str, int], name: str = "forwarder") -> None:
        self._listener = listener
        self._target = target
        self._name = name
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the forwarder listens on, inside its namespace."""
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._accept_thread = threading.Thread(target=self._accept_loop, name=self._name, daemon=True)
        self._accept_thread.start()

    def stop(self) -> None:
        """Close the listener and every relayed connection. Idempotent."""
        self._stopping.set()
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            _close(conn)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener closed by stop()
            threading.Thread(
                target=self._relay, args=(client,), name=f"{self._name}-conn", daemon=True
            ).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=10)
        except OSError as exc:
            log.warning("%s: cannot reach %s:%s: %s", self._name, *self._target, exc)
            _close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._stopping.is_set():
                _close(client)
                _close(upstream)
                return
            self._open.update((client, upstream))
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._open.difference_update((client, upstream))
        _close(client)
        _close(upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        """Copy src→dst until EOF, then half-close dst so the other side sees the end too."""
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.close()
