"""When growth may call EC2, and why not: subnets EC2 called full rest (`SubnetBackoff`), the account's
throttling rests growth and puts pods first (`ThrottleBackoff`), a new ENI whose host setup failed holds
further ENIs until the reconciler took it. Growth actions report here from worker threads: one lock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from vpccni.ipamd.pool.growth import PoolPacing
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.ipamd.pool.subnet_backoff import SubnetBackoff
from vpccni.ipamd.pool.throttle_backoff import ThrottleBackoff
from vpccni.ipamd.ports import NO_USABLE_SUBNET_CODE, CloudError

log = logging.getLogger(__name__)

WARM_TARGETS_WAIT = "moments ago; warm targets wait"


class GrowthGate:
    def __init__(
        self,
        *,
        pacing: PoolPacing,
        subnet_rest_first_s: float,
        subnet_rest_max_s: float,
        eni_hold_s: float,
        account_throttled_at: Callable[[], float],
    ) -> None:
        self._pacing = pacing
        self._eni_hold_s = eni_hold_s
        self._account_throttled_at = account_throttled_at
        self._subnets = SubnetBackoff(first_s=subnet_rest_first_s, max_s=subnet_rest_max_s)
        self._throttle = ThrottleBackoff(
            first_s=pacing.throttle_backoff_first_s, max_s=pacing.throttle_backoff_max_s
        )
        self._no_subnet_until = float("-inf")  # every subnet for a new ENI rests until then
        self._no_eni_until = float("-inf")  # a new ENI's host setup failed: the reconciler first
        self._lock = threading.Lock()

    def throttle_rest(self, now: float) -> PoolStatus | None:
        """THROTTLED with when growth asks again, while growth rests after a throttled growth action."""
        rest = self._throttle.resting_for(now)
        if rest <= 0:
            return None
        return PoolStatus(state=GrowthState.THROTTLED, detail="RequestLimitExceeded", retry_after_s=rest)

    def yielding(self, now: float) -> bool:
        """EC2 throttled this node lately (a growth action, or any call its client retried): pods first."""
        window = self._pacing.warm_yield_s
        return self._throttle.recent(now, window) or now - self._account_throttled_at() < window

    @staticmethod
    def warm_targets_wait() -> PoolStatus:
        return PoolStatus(state=GrowthState.THROTTLED, detail=WARM_TARGETS_WAIT)

    def resting_subnets(self, now: float) -> frozenset[str]:
        with self._lock:
            return self._subnets.resting(now)

    def new_enis_held(self, now: float) -> PoolStatus | None:
        """Why no new ENI may start now (None: it may); the status is None when it says nothing new."""
        with self._lock:
            if now < self._no_subnet_until:
                return self._resting_status(now)
            if now < self._no_eni_until:
                return PoolStatus(state=GrowthState.GROWING)
            return None

    def succeeded(self, subnet_id: str) -> None:
        with self._lock:
            self._subnets.succeeded(subnet_id)
        self._throttle.succeeded()

    def eni_setup_failed(self, eni_id: str, now: float) -> PoolStatus:
        # Attaching more ENIs would only strand more of them: wait for the reconciler.
        with self._lock:
            self._no_eni_until = now + self._eni_hold_s
        return PoolStatus(state=GrowthState.ENI_SETUP_FAILED, detail=eni_id)

    def failed(self, err: CloudError, subnet_ids: tuple[str, ...], now: float) -> PoolStatus | None:
        """Record a failed growth action; the status to show (None: growth goes on, elsewhere, at once)."""
        with self._lock:
            if err.is_insufficient_cidr:
                self._subnets.failed(subnet_ids, now)
                log.warning("%s; %s rests a while, other subnets are tried", err, ", ".join(subnet_ids))
                return None  # an ENI of another subnet, or a new ENI elsewhere, may serve at once
            if err.code == NO_USABLE_SUBNET_CODE:
                self._no_subnet_until = now + (self._subnets.next_try_in(now) or 0.0)
                log.warning("growing the pool waits: %s", err)
                return self._resting_status(now)
        if err.is_throttle:
            rest = self._throttle.throttled(now)
            log.warning("%s; growth rests %.1f s, then serves waiting pods first", err, rest)
            return PoolStatus(state=GrowthState.THROTTLED, detail=err.code, retry_after_s=rest)
        log.warning("growing the pool failed: %s (%s)", err, err.code)
        return PoolStatus(state=GrowthState.CLOUD_ERROR, detail=f"{err.code}: {err}")

    def _resting_status(self, now: float) -> PoolStatus:
        return PoolStatus(
            state=GrowthState.SUBNET_EXHAUSTED,
            subnet_ids=tuple(sorted(self._subnets.resting(now))),
            retry_after_s=self._subnets.next_try_in(now),
        )
