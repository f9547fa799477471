"""Token-bucket throttling of EC2 requests, as EC2 meters them for an account (`RequestLimitExceeded`).

Two models:
- `Throttle`: one bucket per category (mutating / non-mutating) shared by every action; the testbed's default,
  stricter than EC2 (a burst of one action spends the budget of all), and what tests tune with
  `Cloud.set_throttle`.
- `AccountThrottle`: EC2's published model ("Request throttling for the Amazon EC2 API", request token
  bucket sizes and refill rates): every action has its own bucket, sized by its category, except the
  actions EC2 lists with sizes of their own; a few Describe actions called with neither a filter nor
  pagination draw from a smaller bucket. The fleet simulation runs against this one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MUTATING = "mutating"
NON_MUTATING = "non-mutating"
UNFILTERED = "unfiltered-non-mutating"  # AccountThrottle only
CATEGORIES = (MUTATING, NON_MUTATING)

_READ_PREFIXES = ("Describe", "Get", "List")


def action_category(action: str) -> str:
    return NON_MUTATING if action.startswith(_READ_PREFIXES) else MUTATING


@dataclass(frozen=True, kw_only=True)
class BucketSpec:
    """capacity: burst size; refill_per_s: sustained rate. EC2's documented defaults are below."""

    capacity: int
    refill_per_s: float


# EC2's default request-rate buckets for the account (non-mutating 100 burst / 20 per s, mutating 50 / 5).
EC2_DEFAULT_BUCKETS: dict[str, BucketSpec] = {
    NON_MUTATING: BucketSpec(capacity=100, refill_per_s=20.0),
    MUTATING: BucketSpec(capacity=50, refill_per_s=5.0),
}

# EC2's published per-action defaults: each action's bucket is its category's size...
ACCOUNT_CATEGORY_BUCKETS: dict[str, BucketSpec] = {
    NON_MUTATING: BucketSpec(capacity=100, refill_per_s=20.0),
    UNFILTERED: BucketSpec(capacity=50, refill_per_s=10.0),
    MUTATING: BucketSpec(capacity=50, refill_per_s=5.0),
}
# ...these Describe actions use the smaller bucket when called with neither a filter nor pagination...
UNFILTERED_ACTIONS = frozenset(
    {
        "DescribeInstances",
        "DescribeInstanceStatus",
        "DescribeNetworkInterfaces",
        "DescribeSecurityGroups",
        "DescribeSnapshots",
        "DescribeSpotInstanceRequests",
        "DescribeVolumes",
    }
)
# ...and these ("uncategorized") have sizes of their own (the ones the CNI and the testbed call).
ACCOUNT_ACTION_BUCKETS: dict[str, BucketSpec] = {
    "AssignIpv6Addresses": BucketSpec(capacity=100, refill_per_s=5.0),
    "AssignPrivateIpAddresses": BucketSpec(capacity=100, refill_per_s=5.0),
    "CreateNetworkInterface": BucketSpec(capacity=100, refill_per_s=5.0),
    "CreateTags": BucketSpec(capacity=100, refill_per_s=10.0),
    "DeleteNetworkInterface": BucketSpec(capacity=100, refill_per_s=5.0),
    "DeleteTags": BucketSpec(capacity=100, refill_per_s=10.0),
    "ModifyNetworkInterfaceAttribute": BucketSpec(capacity=100, refill_per_s=5.0),
    "RunInstances": BucketSpec(capacity=5, refill_per_s=2.0),
    "TerminateInstances": BucketSpec(capacity=100, refill_per_s=5.0),
    "UnassignPrivateIpAddresses": BucketSpec(capacity=100, refill_per_s=5.0),
}


def is_unfiltered(action: str, params: Mapping[str, str]) -> bool:
    """A listed Describe call with no `Filter.N` and no pagination (`MaxResults`/`NextToken`)."""
    if action not in UNFILTERED_ACTIONS:
        return False
    return not any(k.startswith("Filter.") or k in ("MaxResults", "NextToken") for k in params)


def account_bucket(action: str, params: Mapping[str, str]) -> tuple[str, BucketSpec]:
    """The bucket (key, size) EC2 meters this request against, by its published defaults."""
    if is_unfiltered(action, params):
        return f"{action}/unfiltered", ACCOUNT_CATEGORY_BUCKETS[UNFILTERED]
    own = ACCOUNT_ACTION_BUCKETS.get(action)
    return action, own or ACCOUNT_CATEGORY_BUCKETS[action_category(action)]


class TokenBucket:
    def __init__(self, spec: BucketSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self._spec = spec
        self._clock = clock
        self._tokens = float(spec.capacity)
        self._last: float | None = None

    def take(self) -> bool:
        now = self._clock()
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            self._tokens = min(float(self._spec.capacity), self._tokens + elapsed * self._spec.refill_per_s)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Throttle:
    """One bucket per category; a category with no bucket is never throttled."""

    def __init__(self, specs: dict[str, BucketSpec], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        for category, spec in specs.items():
            self.configure(category, spec)

    def configure(self, category: str, spec: BucketSpec | None) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown throttle category {category!r}: use one of {', '.join(CATEGORIES)}")
        with self._lock:
            if spec is None:
                self._buckets.pop(category, None)
            else:
                self._buckets[category] = TokenBucket(spec, self._clock)

    def admit(self, action: str, params: Mapping[str, str] | None = None) -> bool:
        with self._lock:
            bucket = self._buckets.get(action_category(action))
            return True if bucket is None else bucket.take()


class AccountThrottle(Throttle):
    """EC2's per-action buckets with the published default sizes (see the module docstring).

    `configure(category, None)` switches a category off (setting up a test without spending the budget);
    `configure(category, spec)` switches it back on with the published sizes, as EC2 offers no other.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__({}, clock)
        self._off: set[str] = set()
        self._actions: dict[str, TokenBucket] = {}

    def configure(self, category: str, spec: BucketSpec | None) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown throttle category {category!r}: use one of {', '.join(CATEGORIES)}")
        with self._lock:
            if spec is None:
                self._off.add(category)
            else:
                self._off.discard(category)

    def admit(self, action: str, params: Mapping[str, str] | None = None) -> bool:
        key, spec = account_bucket(action, params or {})
        with self._lock:
            if action_category(action) in self._off:
                return True
            bucket = self._actions.get(key)
            if bucket is None:
                bucket = self._actions[key] = TokenBucket(spec, self._clock)
            return bucket.take()
