"""A directory watch through Linux inotify (libc via ctypes): wake the moment a file appears or goes, so a
SIGKILL can land while the agent writes its checkpoint or drains its DEL queue."""

from __future__ import annotations

import ctypes
import os
import select
import struct
import time
from collections.abc import Callable

IN_CREATE = 0x100
IN_DELETE = 0x200
IN_MOVED_FROM = 0x40
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then `len` bytes of NUL-padded name)


class DirectoryWatch:
    """`with DirectoryWatch(path, IN_CREATE) as watch: name = watch.wait(lambda name, mask: ..., 5.0)`."""

    def __init__(self, path: str, mask: int) -> None:
        self._path = path
        self._mask = mask
        self._fd = -1

    def __enter__(self) -> DirectoryWatch:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(fd, os.fsencode(self._path), self._mask) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"cannot watch {self._path}")
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def wait(self, match: Callable[[str, int], bool], timeout_s: float) -> str | None:
        """The name of the first event `match(name, mask)` accepts, or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            for name, mask in _events(data):
                if match(name, mask):
                    return name
        return None


def _events(data: bytes) -> list[tuple[str, int]]:
    out = []
    offset = 0
    while offset + _EVENT.size <= len(data):
        _, mask, _, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        name = data[offset : offset + length].rstrip(b"\0").decode(errors="replace")
        offset += length
        out.append((name, mask))
    return out
