"""Reconnect back-off for the watcher and the connectivity probe."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ReconnectBackoff:
    """Wait ``initial_s * factor**n``, capped at ``max_s``, +/- ``jitter`` so nodes don't retry in step."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Wait after ``failures`` consecutive failures (1-based)."""
        base = min(self.max_s, self.initial_s * self.factor ** max(0, failures - 1))
        if self.jitter:
            base *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base)


DEFAULT_BACKOFF = ReconnectBackoff()
