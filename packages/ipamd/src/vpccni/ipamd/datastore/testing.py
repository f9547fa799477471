"""Stateful fakes for the datastore's seams (clock, checkpoint). Product code never imports this module."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence

from vpccni.ipamd.checkpoint import CheckpointEntry, decode, encode


class FakeClock:
    """A clock that moves only when told to; `sleep` advances it."""

    def __init__(self, *, start: dt.datetime | None = None) -> None:
        self._mono = 1000.0
        self._wall = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def now(self) -> dt.datetime:
        with self._lock:
            return self._wall

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            self._wall += dt.timedelta(seconds=seconds)


class MemoryCheckpointer:
    """Keeps the encoded checkpoint in memory (the same bytes the file holds); can be told to fail writes."""

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data
        self.writes = 0
        self.fail_writes = False

    def read(self) -> tuple[CheckpointEntry, ...] | None:
        return None if self.data is None else decode(self.data, source="memory checkpoint")

    def write(self, entries: Sequence[CheckpointEntry]) -> None:
        if self.fail_writes:
            raise OSError(28, "No space left on device")
        self.data = encode(entries)
        self.writes += 1
