"""The pool's back-off after EC2 throttled a growth call (`RequestLimitExceeded`): the account's signal.

EC2 meters requests per account, so a throttled node is one of many asking at once. Retrying at the next
wake-up (pods waiting for addresses wake the pool every half second) would keep the account saturated, and
nodes that were throttled together would come back together. Instead the next growth waits a full-jitter
back-off: a random time up to `first_s`, doubling with each further throttle up to `max_s`, forgotten
after a growth call succeeds. For a while after a throttle, growth serves waiting pods only (warm targets
wait) and starts one new ENI at a time, so the account's calls go first to nodes whose pods are waiting.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ThrottleBackoff:
    first_s: float = 1.0
    max_s: float = 10.0
    jitter: Callable[[], float] = field(default_factory=lambda: random.Random().random)
    _period_s: float = 0.0
    _until: float = float("-inf")
    _last: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def throttled(self, now: float) -> float:
        """Record a throttle; returns the seconds growth now rests."""
        with self._lock:
            self._period_s = min(self.max_s, self._period_s * 2 if self._period_s else self.first_s)
            wait = self._period_s * self.jitter()
            self._until = max(self._until, now + wait)
            self._last = now
            return wait

    def succeeded(self) -> None:
        with self._lock:
            self._period_s = 0.0

    def resting_for(self, now: float) -> float:
        """Seconds until growth may call EC2 again (0: now)."""
        with self._lock:
            return max(0.0, self._until - now)

    def recent(self, now: float, within_s: float) -> bool:
        with self._lock:
            return now - self._last < within_s
