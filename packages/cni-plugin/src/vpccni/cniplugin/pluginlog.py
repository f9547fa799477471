"""The shim's log: JSON lines to ``pluginLogFile`` (stderr when empty), never to stdout.

Not the ``logging`` module: the shim runs once per pod and every import counts (see main.py), and the
format mirrors upstream's zap JSON lines (``level``, ``ts``, ``msg`` plus fields). ``posix`` and ``time``
are built into the interpreter and already loaded; ``os`` is imported only to create a missing folder.

The file rotates like ipamd's (and upstream's lumberjack size limit): once it reaches ``MAX_BYTES``, the
call that notices renames it to ``.1`` (``.1`` to ``.2`` ... keeping ``BACKUP_COUNT``) and starts a new
one. Renames are atomic, so concurrent calls at worst shift the backups once more; nothing is compressed
(a CNI call must not spend seconds on it).
"""

from __future__ import annotations

import posix
import sys
import time

from vpccni.cniplugin import jsoncodec

_OPEN_FLAGS = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC
MAX_BYTES = 100 * 1024 * 1024
BACKUP_COUNT = 5

LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "fatal": 50, "panic": 50}


class PluginLog:
    """Appends one JSON object per line. Failing to log never fails the CNI operation."""

    def __init__(self, *, path: str = "", level: str = "debug", max_bytes: int = MAX_BYTES) -> None:
        self._path = path
        self._threshold = LEVELS.get(level, 10)
        self._max_bytes = max_bytes
        self._fd: int | None = None

    def _write(self, line: bytes) -> None:
        if not self._path or self._path == "stderr":
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
            return
        if self._fd is None:
            try:
                self._fd = self._open()
            except OSError:
                self._path = ""
                self._write(line)
                return
        posix.write(self._fd, line)

    def _open(self) -> int:
        try:
            fd = posix.open(self._path, _OPEN_FLAGS, 0o640)
        except FileNotFoundError:  # first use on this node: the log folder does not exist yet
            import os

            os.makedirs(os.path.dirname(self._path) or "/", exist_ok=True)
            fd = posix.open(self._path, _OPEN_FLAGS, 0o640)
        if posix.fstat(fd).st_size < self._max_bytes:
            return fd
        posix.close(fd)
        self._rotate()
        return posix.open(self._path, _OPEN_FLAGS, 0o640)

    def _rotate(self) -> None:
        for n in range(BACKUP_COUNT - 1, 0, -1):
            try:
                posix.rename(f"{self._path}.{n}", f"{self._path}.{n + 1}")
            except FileNotFoundError:
                pass
        try:
            posix.rename(self._path, f"{self._path}.1")
        except FileNotFoundError:
            pass  # another call rotated it a moment ago

    def log(self, level: str, msg: str, **fields: object) -> None:
        if LEVELS.get(level, 10) < self._threshold:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        record: dict[str, object] = {"level": level, "ts": stamp, "caller": "aws-cni", "msg": msg}
        record.update(fields)
        try:
            self._write(jsoncodec.dumps(record, default=str).encode() + b"\n")
        except (OSError, ValueError):
            pass

    def debug(self, msg: str, **fields: object) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: object) -> None:
        self.log("info", msg, **fields)

    def error(self, msg: str, **fields: object) -> None:
        self.log("error", msg, **fields)

    def close(self) -> None:
        if self._fd is not None:
            posix.close(self._fd)
            self._fd = None
