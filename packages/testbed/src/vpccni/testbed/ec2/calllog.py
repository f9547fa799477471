"""A log of every EC2 call the testbed served: action, parameters, result code and timing; and the calls
being served right now (a chaos test kills the agent while, say, an AttachNetworkInterface is in flight)."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

# Enough for any test or benchmark run; the oldest records go first so a long demo cannot exhaust memory.
MAX_RECORDS = 200_000


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    action: str
    params: dict[str, str]
    error_code: str | None
    started: float  # wall-clock (time.time()) when the request arrived
    duration: float  # seconds, including injected latency


class CallLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: deque[CallRecord] = deque(maxlen=MAX_RECORDS)
        self._in_flight: Counter[str] = Counter()

    def begin(self, action: str) -> None:
        """A request for `action` arrived (before throttling, latency and the call itself)."""
        with self._lock:
            self._in_flight[action] += 1

    def end(self, action: str) -> None:
        """The request for `action` was answered (or failed)."""
        with self._lock:
            self._in_flight[action] -= 1

    def append(self, record: CallRecord) -> None:
        with self._lock:
            self._records.append(record)

    def in_flight(self, action: str) -> int:
        """How many calls of `action` arrived and are not answered yet."""
        with self._lock:
            return self._in_flight[action]

    def records(self) -> list[CallRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
