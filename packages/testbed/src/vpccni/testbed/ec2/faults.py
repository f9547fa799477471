"""Per-action latency and error injection, changeable while the server runs."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class InjectedError:
    code: str
    message: str
    subnet_id: str | None = None  # only calls about this subnet (its ENIs, new ENIs in it) fail


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

    def inject_error(
        self, action: str, code: str, count: int = 1, message: str | None = None, *,
        subnet_id: str | None = None,
    ) -> None:  # fmt: skip
        """The next `count` calls of `action` ('*' for any) fail with EC2 error `code`; with `subnet_id`,
        only calls about that subnet (a subnet that is full fails only there)."""
        err = InjectedError(
            code=code, message=message or f"injected by the vpccni testbed for {action}", subnet_id=subnet_id
        )
        with self._lock:
            queue = self._errors.setdefault(action, deque())
            queue.extend([err] * count)

    def clear(self) -> None:
        with self._lock:
            self._latency.clear()
            self._errors.clear()

    def take_error(self, action: str, subnet_id: str | None = None) -> InjectedError | None:
        """The next injected error for a call of `action` about `subnet_id` (None: not about a subnet)."""
        with self._lock:
            for key in (action, "*"):
                queue = self._errors.get(key) or deque()
                for index, err in enumerate(queue):
                    if err.subnet_id is None or err.subnet_id == subnet_id:
                        del queue[index]
                        return err
            return None
