"""Reading one aws-cni request from a non-blocking socket, in as many pieces as it arrives.

The endpoint's I/O thread feeds every readable connection to its reader; a complete request (with the netns
fd that travelled on its first bytes) goes to a worker only then, so a slow or idle client never holds one.
"""

from __future__ import annotations

import _socket

from vpccni.cniplugin import wire

_READ_CHUNK = 1 << 16


class RequestReader:
    """Accumulates one request frame. ``feed`` returns the request once complete, None while more is
    needed; it raises ``wire.WireError`` (broken or hostile exchange) or ``CNIError`` (malformed request).
    The received fd belongs to the reader until ``take_fd``; ``close`` releases whatever it still holds."""

    __slots__ = ("_buf", "_fds", "_size")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._size: int | None = None
        self._fds: list[int] = []

    def feed(self, conn: _socket.socket) -> wire.Request | None:
        while True:
            want = self._missing()
            try:
                data, fds, flags = wire.recv_with_fds(conn, min(want, _READ_CHUNK), 1)
            except (BlockingIOError, InterruptedError):
                return None
            self._fds.extend(fds)
            if len(self._fds) > 1 or flags & getattr(_socket, "MSG_CTRUNC", 0):
                raise wire.WireError("the peer sent more file descriptors than the one netns fd")
            if not data:
                raise wire.WireError(f"the peer closed the connection after {len(self._buf)} bytes")
            self._buf += data
            if self._size is None and len(self._buf) >= wire.HEADER_BYTES:
                self._size = wire.frame_size(bytes(self._buf[: wire.HEADER_BYTES]))
            if self._size is not None and len(self._buf) == wire.HEADER_BYTES + self._size:
                return wire.decode_request(bytes(self._buf[wire.HEADER_BYTES :]), self.fd)

    def _missing(self) -> int:
        if self._size is None:
            return wire.HEADER_BYTES - len(self._buf)
        return wire.HEADER_BYTES + self._size - len(self._buf)

    @property
    def fd(self) -> int | None:
        return self._fds[0] if self._fds else None

    def take_fd(self) -> int | None:
        """Hand the netns fd over to the caller (who closes it)."""
        fd = self.fd
        self._fds.clear()
        return fd

    def close(self) -> None:
        for fd in self._fds:
            wire.close_fd(fd)
        self._fds.clear()
