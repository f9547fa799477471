"""A cache for one recompute after another: what a round does not use is dropped at its end.

The agent recomputes every local pod's policy on each change; between two rounds almost nothing changes, so
per-direction results (keyed by which PolicyEndpoint versions produced them) are reused, and only the
directions a changed object touches are built again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class RoundCache(Generic[V]):
    def __init__(self) -> None:
        self._values: dict[Hashable, V] = {}
        self._used: set[Hashable] = set()
        self.misses = 0

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        self._used.add(key)
        try:
            return self._values[key]
        except KeyError:
            self.misses += 1
            value = self._values[key] = make()
            return value

    def end_round(self) -> None:
        """Forget what this round did not ask for."""
        self._values = {k: v for k, v in self._values.items() if k in self._used}
        self._used = set()
