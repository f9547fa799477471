"""The reconcile cooldown: addresses and ENIs ipamd just gave back, which IMDS may still list for a while."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable

from vpccni.awsutils.clock import Clock

RECONCILE_COOLDOWN_S = 60.0  # ipReconcileCooldown


class ReconcileCooldown:
    """Keys (a freed /32 or /28, or a freed ENI id) the reconciler must not re-add until the cooldown ends.

    After it ends the reconciler still only re-adds what EC2 confirms, so an expired entry is harmless.
    """

    def __init__(self, *, clock: Clock, period_s: float = RECONCILE_COOLDOWN_S) -> None:
        self._clock = clock
        self._period_s = period_s
        self._until: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def add(self, keys: Iterable[Hashable]) -> None:
        until = self._clock.monotonic() + self._period_s
        with self._lock:
            for key in keys:
                self._until[key] = until

    def active(self, key: Hashable) -> bool:
        now = self._clock.monotonic()
        with self._lock:
            until = self._until.get(key)
            if until is None:
                return False
            if until <= now:
                del self._until[key]
                return False
            return True
