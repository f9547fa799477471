"""A clock that moves only when told: the testbed's timed parts (throttle buckets, IMDS tokens, IMDS
snapshots) take a `Callable[[], float]`, and tests drive them with this instead of sleeping."""

from __future__ import annotations


class ManualClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
