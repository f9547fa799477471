"""Growth planned for what is coming: ADDs waiting for an address, and EC2 work already under way.

Upstream grows one action per 5 s iteration and waits for each new ENI before planning the next, so a
burst of pods that needs four ENIs waits for four create-attach-IMDS chains in a row. Here the upstream
planner (`planner.plan_increase`, unchanged) is asked repeatedly on a projected pool: the datastore's
snapshot, plus what in-flight growth will add, with every waiting ADD counted as assigned. Each answer is
added to the projection and the planner asked again, until the pool would meet its targets; the answers
are the growth to start now. Assignments to one ENI merge into one call.

So a node that must grow by four ENIs starts all four at once (up to `PoolPacing.concurrent_enis`), with
the same ENI sizes and the same EC2 calls per ENI as one-at-a-time growth would make. An ENI has at most
one assignment in flight unless the next is for a /28's worth of addresses or more: a few more waits until
that one lands and goes out as one call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Network

from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.decisions import AllocateEni, AssignToEni, NoAction
from vpccni.ipamd.pool.planner import plan_increase
from vpccni.ipamd.pool.snapshot import PREFIX_SIZE, CidrSnapshot, EniSnapshot, PoolSnapshot

PENDING_PREFIX = "pending:"  # the id of an ENI being allocated, in a projection
_PLACEHOLDER = {False: IPv4Network("0.0.0.0/32"), True: IPv4Network("0.0.0.0/28")}
MAX_DECISIONS = 32  # a bound on one plan (a node holds at most 15 ENIs per card)
MIN_EXTRA_ASSIGNMENT = PREFIX_SIZE  # addresses worth a second assignment in flight to one ENI

Growth = AssignToEni | AllocateEni


@dataclass(frozen=True, kw_only=True)
class PoolPacing:
    """How fast and how hard a node grows its pool (upstream's pacing: `UPSTREAM_PACING`)."""

    grow_steps: int = 4  # plan-and-grow rounds per synchronous iteration (node init's pre-scale, tests)
    wakeups: bool = True  # pods draining the pool and growth landing wake the loop (upstream: 5 s tick only)
    concurrent_enis: int = 4  # ENI allocations in flight at once
    demand_aware: bool = True  # grow for waiting ADDs, not only for the warm targets
    # After EC2 throttles a growth call (every retry of it), the next growth waits a full-jitter back-off
    # (first, doubling to max), and for `warm_yield_s` warm targets yield to waiting pods and new ENIs go
    # one at a time.
    throttle_backoff_first_s: float = 1.0
    throttle_backoff_max_s: float = 10.0
    warm_yield_s: float = 30.0


DEFAULT_PACING = PoolPacing()
UPSTREAM_PACING = PoolPacing(
    grow_steps=1,
    wakeups=False,
    concurrent_enis=1,
    demand_aware=False,
    throttle_backoff_first_s=0.0,
    throttle_backoff_max_s=0.0,
    warm_yield_s=0.0,
)


@dataclass(frozen=True, kw_only=True)
class InFlight:
    """Growth started and not finished: `eni_id` for addresses assigned to an ENI, None for a new ENI."""

    key: int
    eni_id: str | None
    cidrs: int  # secondary IPs, or /28 prefixes when `prefixes`
    prefixes: bool

    @classmethod
    def of(cls, key: int, growth: Growth) -> InFlight:
        if isinstance(growth, AssignToEni):
            return cls(key=key, eni_id=growth.eni_id, cidrs=growth.count, prefixes=growth.prefixes)
        return cls(key=key, eni_id=None, cidrs=growth.size, prefixes=growth.prefixes)


def _free_cidrs(n: int, *, prefixes: bool) -> tuple[CidrSnapshot, ...]:
    cidr = _PLACEHOLDER[prefixes]
    return tuple(CidrSnapshot(cidr=cidr, is_prefix=prefixes, assigned=0) for _ in range(n))


def with_growth(snap: PoolSnapshot, work: Iterable[InFlight]) -> PoolSnapshot:
    """The pool once this work has landed: its addresses are there, and free."""
    enis = list(snap.enis)
    for item in work:
        added = _free_cidrs(item.cidrs, prefixes=item.prefixes)
        if item.eni_id is None:
            enis.append(
                EniSnapshot(
                    eni_id=f"{PENDING_PREFIX}{item.key}", device_number=10_000 + item.key, cidrs=added
                )
            )
            continue
        enis = [replace(e, cidrs=e.cidrs + added) if e.eni_id == item.eni_id else e for e in enis]
    return replace(snap, enis=tuple(enis))


def projected(snap: PoolSnapshot, *, inflight: Iterable[InFlight], waiting: int) -> PoolSnapshot:
    """The pool once in-flight growth lands and every waiting ADD has taken an address."""
    return replace(with_growth(snap, inflight), waiting=waiting)


def pods_first(cfg: PoolConfig) -> PoolConfig:
    """The targets for the waiting pods alone (warm targets at zero): their growth goes first, the warm
    targets' after it, one new ENI at a time, and not while EC2 throttles the account."""
    return replace(cfg, warm_eni_target=0, warm_ip_target=0, minimum_ip_target=0, warm_prefix_target=0)


def plan_growth(
    snap: PoolSnapshot,
    cfg: PoolConfig,
    *,
    inflight: Sequence[InFlight] = (),
    waiting: int = 0,
    resting_subnets: frozenset[str] = frozenset(),
    new_enis: int = MAX_DECISIONS,
) -> tuple[tuple[Growth, ...], NoAction | None]:
    """The growth to start now (at most `new_enis` new ENIs), and why it stops there (None: the ENI limit
    for now, or in-flight work must land first)."""
    pool = projected(snap, inflight=inflight, waiting=waiting)
    assigning = {i.eni_id for i in inflight if i.eni_id is not None}
    planned: list[Growth] = []
    key = max((i.key for i in inflight), default=0)
    stop: NoAction | None = None
    for _ in range(MAX_DECISIONS):
        decision = plan_increase(pool, cfg, resting_subnets=resting_subnets)
        if isinstance(decision, NoAction):
            stop = decision
            break
        key += 1
        pool = with_growth(pool, [InFlight.of(key, decision)])
        if isinstance(decision, AssignToEni) and (
            decision.eni_id.startswith(PENDING_PREFIX)
            or (decision.eni_id in assigning and _addresses(decision) < MIN_EXTRA_ASSIGNMENT)
        ):
            # More for an ENI still being allocated, or a few more addresses for one being assigned to:
            # they go out once that lands, in one call (an AssignPrivateIpAddresses per few pods would
            # multiply calls). The plan goes on as if they were coming, so new ENIs are not held up.
            continue
        if isinstance(decision, AllocateEni):
            if new_enis <= 0:
                break
            new_enis -= 1
        planned.append(decision)
    return _merged(planned), stop


def _addresses(decision: AssignToEni) -> int:
    return decision.count * (PREFIX_SIZE if decision.prefixes else 1)


def _merged(planned: Sequence[Growth]) -> tuple[Growth, ...]:
    """One AssignPrivateIpAddresses per ENI: consecutive assignments to one ENI add up."""
    out: list[Growth] = []
    for decision in planned:
        last = out[-1] if out else None
        if (
            isinstance(decision, AssignToEni)
            and isinstance(last, AssignToEni)
            and last.eni_id == decision.eni_id
        ):
            out[-1] = replace(last, count=last.count + decision.count)
        else:
            out.append(decision)
    return tuple(out)
