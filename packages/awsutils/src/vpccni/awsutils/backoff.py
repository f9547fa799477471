"""Application-level retry with exponential back-off (upstream's ``retry.SimpleBackoff`` schedules)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from vpccni.awsutils.clock import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """``attempts`` tries; waits ``initial_s * factor**n`` (at most ``max_s``), +/- ``jitter`` fraction."""

    initial_s: float
    max_s: float
    attempts: int
    factor: float = 2.0
    jitter: float = 0.0

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``retry`` (0-based)."""
        base = min(self.max_s, self.initial_s * self.factor**retry)
        if self.jitter and rng is not None:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(0.0, base)


# Upstream schedules (docs/design/upstream-contract.md §5).
DETACH_BACKOFF = Backoff(initial_s=0.2, max_s=60.0, attempts=12, jitter=0.15)
DELETE_BACKOFF = Backoff(initial_s=0.5, max_s=60.0, attempts=12, jitter=0.15)
CREATE_TAGS_BACKOFF = Backoff(initial_s=0.5, max_s=60.0, attempts=5, jitter=0.3)
IMDS_ATTACH_WAIT_BACKOFF = Backoff(initial_s=0.1, max_s=60.0, attempts=12)


def retry(
    fn: Callable[[], T],
    *,
    policy: Backoff,
    clock: Clock,
    retry_on: Callable[[Exception], bool],
    what: str,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn`` until it succeeds, an error ``retry_on`` rejects is raised, or attempts run out."""
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as exc:
            if not retry_on(exc) or attempt == policy.attempts - 1:
                raise
            wait = policy.delay(attempt, rng)
            log.info(
                "%s failed (%s); retry %d/%d in %.2fs", what, exc, attempt + 1, policy.attempts - 1, wait
            )
            clock.sleep(wait)
    raise AssertionError("unreachable: attempts must be >= 1")
