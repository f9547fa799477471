"""Per-subnet back-off after EC2 said a subnet has no free address (or no contiguous /28).

Upstream stops all growth for 120 s after one such answer, so a single transient error froze a node whose
other `kubernetes.io/role/cni` subnets had room. Here only that subnet rests: 4 s after the first refusal,
doubling on each further one up to 120 s, and forgotten once EC2 gives it addresses again. Meanwhile the pool
manager fills ENIs of other subnets or creates a new ENI elsewhere. A short first rest because a shortage is
often momentary (other nodes give addresses back within seconds): three refusals in a row cost 28 s, where
10 s doubling made pods wait 70 s; a subnet that stays full reaches the 2-minute rest after six refusals
(about two minutes), and is then asked as seldom as upstream asks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

FIRST_S = 4.0
MAX_S = 120.0


@dataclass
class _Rest:
    until: float
    period_s: float


@dataclass
class SubnetBackoff:
    """Which subnets rest until when; the clock is the caller's (monotonic seconds)."""

    first_s: float = FIRST_S
    max_s: float = MAX_S
    # Up to 10 % more, so nodes that failed together do not come back together.
    jitter: Callable[[], float] = field(default_factory=lambda: random.Random().random)
    _rests: dict[str, _Rest] = field(default_factory=dict)

    def failed(self, subnet_ids: Iterable[str], now: float) -> None:
        for subnet_id in subnet_ids:
            if not subnet_id:
                continue
            previous = self._rests.get(subnet_id)
            period = self.first_s if previous is None else min(previous.period_s * 2, self.max_s)
            self._rests[subnet_id] = _Rest(until=now + period * (1 + 0.1 * self.jitter()), period_s=period)

    def succeeded(self, subnet_id: str) -> None:
        self._rests.pop(subnet_id, None)

    def resting(self, now: float) -> frozenset[str]:
        """The subnets not to ask now."""
        return frozenset(s for s, rest in self._rests.items() if rest.until > now)

    def next_try_in(self, now: float) -> float | None:
        """Seconds until the first resting subnet may be asked again; None when none rests."""
        waits = [rest.until - now for rest in self._rests.values() if rest.until > now]
        return min(waits) if waits else None
