"""The shim's log: JSON lines to ``pluginLogFile`` (stderr when empty), never to stdout.

Not the ``logging`` module: the shim runs once per pod and every import counts (see main.py), and the
format mirrors upstream's zap JSON lines (``level``, ``ts``, ``msg`` plus fields).
"""

from __future__ import annotations

import json
import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "fatal": 50, "panic": 50}


class PluginLog:
    """Appends one JSON object per line. Failing to log never fails the CNI operation."""

    def __init__(self, *, path: str = "", level: str = "debug") -> None:
        self._path = path
        self._threshold = LEVELS.get(level, 10)
        self._fd: int | None = None

    def _write(self, line: bytes) -> None:
        if not self._path or self._path == "stderr":
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
            return
        if self._fd is None:
            try:
                os.makedirs(os.path.dirname(self._path) or "/", exist_ok=True)
                self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            except OSError:
                self._path = ""
                self._write(line)
                return
        os.write(self._fd, line)

    def log(self, level: str, msg: str, **fields: object) -> None:
        if LEVELS.get(level, 10) < self._threshold:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        record: dict[str, object] = {"level": level, "ts": stamp, "caller": "aws-cni", "msg": msg}
        record.update(fields)
        try:
            self._write(json.dumps(record, default=str).encode() + b"\n")
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
            os.close(self._fd)
            self._fd = None
