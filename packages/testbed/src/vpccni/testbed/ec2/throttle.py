"""Token-bucket throttling per EC2 API category, as EC2 meters request rates (mutating / non-mutating)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MUTATING = "mutating"
NON_MUTATING = "non-mutating"
CATEGORIES = (MUTATING, NON_MUTATING)

_READ_PREFIXES = ("Describe", "Get", "List")


def action_category(action: str) -> str:
    return NON_MUTATING if action.startswith(_READ_PREFIXES) else MUTATING


@dataclass(frozen=True, kw_only=True)
class BucketSpec:
    """capacity: burst size; refill_per_s: sustained rate. EC2's documented defaults are below."""

    capacity: int
    refill_per_s: float


# EC2's default request-rate buckets for the account (non-mutating 100 burst / 20 per s, mutating 50 / 5).
EC2_DEFAULT_BUCKETS: dict[str, BucketSpec] = {
    NON_MUTATING: BucketSpec(capacity=100, refill_per_s=20.0),
    MUTATING: BucketSpec(capacity=50, refill_per_s=5.0),
}


class TokenBucket:
    def __init__(self, spec: BucketSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self._spec = spec
        self._clock = clock
        self._tokens = float(spec.capacity)
        self._last: float | None = None

    def take(self) -> bool:
        now = self._clock()
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            self._tokens = min(float(self._spec.capacity), self._tokens + elapsed * self._spec.refill_per_s)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Throttle:
    """One bucket per category; a category with no bucket is never throttled."""

    def __init__(self, specs: dict[str, BucketSpec], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        for category, spec in specs.items():
            self.configure(category, spec)

    def configure(self, category: str, spec: BucketSpec | None) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown throttle category {category!r}: use one of {', '.join(CATEGORIES)}")
        with self._lock:
            if spec is None:
                self._buckets.pop(category, None)
            else:
                self._buckets[category] = TokenBucket(spec, self._clock)

    def admit(self, action: str) -> bool:
        with self._lock:
            bucket = self._buckets.get(action_category(action))
            return True if bucket is None else bucket.take()
