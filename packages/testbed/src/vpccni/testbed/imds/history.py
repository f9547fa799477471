"""Timestamped metadata snapshots per instance, so IMDS can show the state as it was N seconds ago."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

from vpccni.testbed.imds.metadata import Snapshot

MAX_SNAPSHOTS = 10_000


class SnapshotHistory:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._times: dict[str, list[float]] = {}
        self._snaps: dict[str, list[Snapshot]] = {}

    def record(self, instance_id: str, snapshot: Snapshot) -> None:
        with self._lock:
            snaps = self._snaps.setdefault(instance_id, [])
            times = self._times.setdefault(instance_id, [])
            if snaps and snaps[-1] == snapshot:
                return
            snaps.append(snapshot)
            times.append(self._clock())
            if len(snaps) > MAX_SNAPSHOTS:
                del snaps[0], times[0]

    def as_of(self, instance_id: str, lag: float) -> Snapshot | None:
        """The latest snapshot at least `lag` seconds old (the oldest one if none is that old)."""
        with self._lock:
            times = self._times.get(instance_id)
            if not times:
                return None
            idx = bisect.bisect_right(times, self._clock() - lag) - 1
            return self._snaps[instance_id][max(idx, 0)]

    def forget(self, instance_id: str) -> None:
        with self._lock:
            self._times.pop(instance_id, None)
            self._snaps.pop(instance_id, None)
