"""Client-side token buckets for EC2 calls (upstream has none; Cilium's operator uses 4 QPS, burst 20).

EC2 throttles per account and region with token buckets, separately for mutating and non-mutating actions.
One node that bursts (a pod storm, WARM_IP_TARGET churn) can starve every other node of the account's
mutating budget, so each node paces itself. Defaults (per node); ipamd takes them from its settings:

- mutating (Create/Attach/Detach/Delete/Modify/Assign/Unassign/CreateTags): ``VPCCNI_EC2_MUTATING_QPS=5``,
  ``VPCCNI_EC2_MUTATING_BURST=10``. 5/s is EC2's mutating refill rate, so one node alone can never drain
  the account bucket faster than it refills; a burst of 10 lets one ENI allocation (create, attach,
  modify, tag, assign: about 5 calls) and one free run back to back without waiting.
- read (Describe*): ``VPCCNI_EC2_READ_QPS=20``, ``VPCCNI_EC2_READ_BURST=40``. 20/s is EC2's non-mutating
  refill rate; ipamd reads EC2 rarely (IMDS is the primary source), a node reaches it only in a resync storm.

A QPS of 0 disables that bucket.

Those budgets are the node's own: hundreds of nodes of one account each within theirs still exceed the
account's (EC2 meters each action per account: AttachNetworkInterface refills at 5/s for all of them). So
each action also has an adaptive rate that follows EC2's answers: every `RequestLimitExceeded` for it halves
the node's rate for that action (down to a twentieth) and empties its burst, every success adds back a tenth
of the configured rate. Nodes sharing an account converge on its rate instead of retrying into it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.observer import ApiObserver, NullObserver

log = logging.getLogger(__name__)

MUTATING = "mutating"
READ = "read"

_READ_PREFIXES = ("Describe", "Get", "List")


def category_of(api: str) -> str:
    """``read`` for Describe*/Get*/List* actions, ``mutating`` for everything else."""
    return READ if api.startswith(_READ_PREFIXES) else MUTATING


@dataclass(frozen=True, kw_only=True)
class RateLimitConfig:
    mutating_qps: float = 5.0
    mutating_burst: int = 10
    read_qps: float = 20.0
    read_burst: int = 40


class TokenBucket:
    """Thread-safe token bucket: ``capacity`` tokens, refilled at ``rate`` per second; rate 0 = unlimited."""

    def __init__(self, *, rate: float, capacity: int, clock: Clock) -> None:
        self._rate = rate
        self._capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp: float | None = None
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token (possibly going into debt) and return how long the caller must wait for it."""
        if self._rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock.monotonic()
            if self._stamp is not None:
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            self._tokens -= 1.0
            # Debt is shared fairly: each waiter reserves its own future token, so N threads wait N/rate.
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class AdaptiveBucket(TokenBucket):
    """A token bucket whose rate follows EC2's answers (AIMD): halved on a throttle, down to `floor` (a
    twentieth: 0.25/s for 5/s, so a node is never silent for long); raised by a tenth of `ceiling` on a
    success, up to `ceiling`."""

    def __init__(self, *, rate: float, capacity: int, clock: Clock) -> None:
        super().__init__(rate=rate, capacity=capacity, clock=clock)
        self.ceiling = rate
        self.floor = rate / 20

    @property
    def rate(self) -> float:
        with self._lock:
            return self._rate

    def throttled(self) -> None:
        if self.ceiling <= 0:
            return
        with self._lock:
            self._rate = max(self.floor, self._rate / 2)
            self._tokens = min(self._tokens, 0.0)  # no burst right after EC2 said no

    def succeeded(self) -> None:
        if self.ceiling <= 0:
            return
        with self._lock:
            self._rate = min(self.ceiling, self._rate + self.ceiling / 10)


class Ec2RateLimiter:
    """The node's budget per category, and an adaptive rate per action; ``acquire(api)`` blocks until the
    call may go and reports the wait; ``throttled(api)`` / ``succeeded(api)`` report EC2's answer."""

    def __init__(
        self,
        config: RateLimitConfig | None = None,
        *,
        clock: Clock | None = None,
        observer: ApiObserver | None = None,
    ) -> None:
        self.config = config or RateLimitConfig()
        self._clock = clock or SystemClock()
        self._observer: ApiObserver = observer or NullObserver()
        self._buckets = {
            MUTATING: TokenBucket(
                rate=self.config.mutating_qps, capacity=self.config.mutating_burst, clock=self._clock
            ),
            READ: TokenBucket(rate=self.config.read_qps, capacity=self.config.read_burst, clock=self._clock),
        }
        self._actions: dict[str, AdaptiveBucket] = {}
        self._actions_lock = threading.Lock()
        self.last_throttle = float("-inf")  # monotonic: when EC2 last answered RequestLimitExceeded

    def _action(self, api: str) -> AdaptiveBucket:
        with self._actions_lock:
            bucket = self._actions.get(api)
            if bucket is None:
                c = self.config
                rate, burst = (
                    (c.read_qps, c.read_burst)
                    if category_of(api) == READ
                    else (c.mutating_qps, c.mutating_burst)
                )
                bucket = self._actions[api] = AdaptiveBucket(rate=rate, capacity=burst, clock=self._clock)
            return bucket

    def rate(self, api: str) -> float:
        """The rate this node now allows itself for ``api`` (0: unlimited)."""
        return self._action(api).rate

    def throttled(self, api: str) -> None:
        """EC2 answered ``RequestLimitExceeded``: slow this action down."""
        bucket = self._action(api)
        bucket.throttled()
        self.last_throttle = self._clock.monotonic()
        log.info("EC2 throttled %s: this node now allows itself %.2f calls/s of it", api, bucket.rate)

    def succeeded(self, api: str) -> None:
        self._action(api).succeeded()

    def acquire(self, api: str) -> float:
        """Wait for a token for ``api``; return the seconds waited."""
        category = category_of(api)
        wait = max(self._buckets[category].reserve(), self._action(api).reserve())
        if wait > 0:
            log.debug("EC2 %s call %s waits %.3fs for the client-side rate limit", category, api, wait)
            self._observer.on_throttle_wait(category, wait)
            self._clock.sleep(wait)
        return wait
