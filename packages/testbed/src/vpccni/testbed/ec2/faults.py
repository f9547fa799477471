"""Per-action latency and error injection, changeable while the server runs."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class InjectedError:
    code: str
    message: str


class FaultPlan:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency: dict[str, float] = {}
        self._errors: dict[str, deque[InjectedError]] = {}

    def set_latency(self, action: str, seconds: float) -> None:
        """action '*' applies to every action without its own latency."""
        with self._lock:
            if seconds <= 0:
                self._latency.pop(action, None)
            else:
                self._latency[action] = seconds

    def latency(self, action: str) -> float:
        with self._lock:
            return self._latency.get(action, self._latency.get("*", 0.0))

    def inject_error(self, action: str, code: str, count: int = 1, message: str | None = None) -> None:
        """The next `count` calls of `action` ('*' for any) fail with EC2 error `code`."""
        err = InjectedError(code=code, message=message or f"injected by the vpccni testbed for {action}")
        with self._lock:
            queue = self._errors.setdefault(action, deque())
            queue.extend([err] * count)

    def clear(self) -> None:
        with self._lock:
            self._latency.clear()
            self._errors.clear()

    def take_error(self, action: str) -> InjectedError | None:
        with self._lock:
            for key in (action, "*"):
                queue = self._errors.get(key)
                if queue:
                    return queue.popleft()
            return None
