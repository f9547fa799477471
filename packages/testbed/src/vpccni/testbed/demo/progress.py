"""A progress bar on stderr: redrawn in place on a terminal, plain lines (every tenth) otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_WIDTH = 30


class Progress:
    def __init__(
        self, *, label: str, total: int, stream: TextIO | None = None, tty: bool | None = None
    ) -> None:
        self._label = label
        self._total = max(total, 1)
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._done = 0
        self._failed = 0
        self._started = time.monotonic()
        self._last_step = -1
        self._lock = threading.Lock()

    def advance(self, *, failed: bool = False, note: str = "") -> None:
        with self._lock:
            self._done += 1
            self._failed += int(failed)
            self._draw(note)

    def _line(self, note: str) -> str:
        filled = int(_WIDTH * self._done / self._total)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        failed = f", {self._failed} failed" if self._failed else ""
        elapsed = time.monotonic() - self._started
        text = f"{self._label} [{bar}] {self._done}/{self._total}{failed} {elapsed:5.1f}s"
        return f"{text} {note}".rstrip()

    def _draw(self, note: str) -> None:
        if self._tty:
            self._stream.write("\r\x1b[K" + self._line(note))
            self._stream.flush()
            return
        step = self._done * 10 // self._total
        if step != self._last_step or self._done == self._total:
            self._last_step = step
            self._stream.write(self._line(note) + "\n")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._tty:
                self._stream.write("\r\x1b[K" + self._line("") + "\n")
                self._stream.flush()
