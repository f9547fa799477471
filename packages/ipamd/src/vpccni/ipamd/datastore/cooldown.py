"""IP_COOLDOWN_PERIOD: a released address is not handed out again until the cooldown has passed (so
kube-proxy and endpoint updates converge), as upstream.

The period is one constant, so a FIFO of (expiry, record, release serial) is in expiry order: the datastore
takes the expired records from its head before each operation (each record once per release). A record
re-assigned, re-placed or removed meanwhile has another serial or no longer cools, and its entry is skipped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from vpccni.ipamd.datastore.records import AddressRecord


class AddressCooldown:
    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._fifo: deque[tuple[float, AddressRecord, int]] = deque()

    @property
    def enabled(self) -> bool:
        return self.period_s > 0

    def start(self, addr: AddressRecord, *, now: float) -> None:
        """`addr` (just released and marked cooling) becomes free at `now` + the period."""
        self._fifo.append((now + self.period_s, addr, addr.serial))

    def expired(self, *, now: float) -> Iterator[AddressRecord]:
        """Records whose cooldown ended by `now`, each once; they still cool until the caller warms them."""
        fifo = self._fifo
        while fifo and fifo[0][0] <= now:
            _, addr, serial = fifo.popleft()
            if addr.serial == serial and addr.cooling and not addr.cidr.removed:
                yield addr

    def next_free_in(self, *, now: float) -> float | None:
        """Seconds until the earliest cooling address is free (None when none cools)."""
        return max(self._fifo[0][0] - now, 0.0) if self._fifo else None
