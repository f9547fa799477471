"""The pool manager: upstream's StartNodeIPPoolManager loop, plus an immediate wake-up when pods drain the
pool.

One iteration (`update_pool`, upstream updateIPPoolIfRequired) grows the pool when it is too low or ADDs wait
for an address, gives back addresses when it is too high (at most every 30 s), and frees at most one ENI.
Growth is planned for the waiting ADDs and the growth already under way (`growth.py`); new ENIs attach on
worker threads, several at once (`runner.py`). In IPv6 mode there is no warm pool: an iteration makes sure the
primary ENI has its /80 prefix (assigning one when EC2 shows none, e.g. after someone removed it), which node
init's pre-scale does first. What a decision does to EC2, the host network and the datastore is in
`eni_actions.py`. The datastore lock is only taken inside the `PoolStore` calls, never across an EC2 or
netlink call.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vpccni.awsutils.clock import Clock
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.cooldown import ReconcileCooldown
from vpccni.ipamd.pool.decisions import (
    AllocateEni,
    AssignToEni,
    FreeEni,
    NoAction,
    NoActionReason,
    ReleaseCidrs,
)
from vpccni.ipamd.pool.eni_actions import EniActions, EniSetupError, PoolReconciler
from vpccni.ipamd.pool.growth import DEFAULT_PACING, Growth, PoolPacing, plan_growth, pods_first
from vpccni.ipamd.pool.growth_gate import GrowthGate
from vpccni.ipamd.pool.ipv6 import ensure_ipv6_prefix
from vpccni.ipamd.pool.planner import (
    MIN_ENI_AGE_S,
    at_max_pods,
    is_pool_too_high,
    is_pool_too_low,
    plan_decrease,
    plan_free_eni,
)
from vpccni.ipamd.pool.runner import GrowthRunner
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.ipamd.pool.subnet_backoff import FIRST_S as SUBNET_REST_FIRST_S
from vpccni.ipamd.pool.subnet_backoff import MAX_S as SUBNET_REST_MAX_S
from vpccni.ipamd.ports import (
    ATTACHMENT_LIMIT_CODE,
    CloudError,
    CloudPort,
    NodeNetworkPort,
    PoolStore,
)

log = logging.getLogger(__name__)

ASSIGN_WORKERS = 2  # threads for assignments to existing ENIs, beside those for new ENIs


@dataclass(frozen=True, kw_only=True)
class PoolTimers:
    """Upstream's constants (ipPoolMonitorInterval split in two halves, etc.)."""

    half_interval_s: float = 2.5
    reconcile_idle_s: float = 60.0
    # Each idle wait is up to this much longer, drawn anew: nodes that joined together do not keep
    # reconciling together (their EC2 reads, when IMDS disagrees, spread out).
    reconcile_jitter: float = 0.1
    decrease_interval_s: float = 30.0
    # A subnet EC2 called full rests this long, doubling up to the maximum (upstream: all growth, 120 s).
    subnet_rest_first_s: float = SUBNET_REST_FIRST_S
    subnet_rest_max_s: float = SUBNET_REST_MAX_S
    min_eni_age_s: float = MIN_ENI_AGE_S  # minENILifeTime


@dataclass(frozen=True, kw_only=True)
class PoolPolicy:
    provisioning_enabled: bool = True  # false with DISABLE_NETWORK_RESOURCE_PROVISIONING or IMDS-only mode
    manage_enis_non_schedulable: bool = False  # AWS_MANAGE_ENIS_NON_SCHEDULABLE
    subnet_id: str | None = None  # custom networking: the ENIConfig's subnet
    security_group_ids: tuple[str, ...] = ()  # custom networking: the ENIConfig's groups


class PoolManager:
    """Keeps one network card's pool at its warm targets. Drive it with `start()`, or call `update_pool()`."""

    def __init__(
        self,
        *,
        config: PoolConfig,
        store: PoolStore,
        cloud: CloudPort,
        network: NodeNetworkPort,
        cooldown: ReconcileCooldown,
        clock: Clock,
        reconciler: PoolReconciler | None = None,
        schedulable: Callable[[], bool] = lambda: True,
        policy: PoolPolicy = PoolPolicy(),
        timers: PoolTimers = PoolTimers(),
        reconcile_eagerly: Callable[[], bool] = lambda: False,
        pacing: PoolPacing = DEFAULT_PACING,
        account_throttled_at: Callable[[], float] = lambda: float("-inf"),
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._cloud = cloud
        self._clock = clock
        self._reconciler = reconciler
        self._schedulable = schedulable
        self._policy = policy
        self._timers = timers
        # True while something must show up soon (upstream: a trunk for security groups for pods): the
        # reconcile then runs every iteration instead of after 60 s of pool idleness.
        self._reconcile_eagerly = reconcile_eagerly
        self._pacing = pacing
        self._rng = rng or random.Random()
        self._reconcile_idle_s = self._next_reconcile_idle()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._iteration = threading.Lock()  # one iteration at a time: the loop, init's pre-scale, tests
        self._enis_behind = threading.Event()  # EC2 said no ENI slot is left: read the ENIs back
        self._thread: threading.Thread | None = None
        self._terminating = False
        self._status = PoolStatus()
        self._last_action = clock.monotonic()
        self._last_decrease = float("-inf")
        # account_throttled_at: when EC2 last throttled any of this node's calls (its client retries them:
        # the pool hears of it only there, before any growth action fails).
        self._gate = GrowthGate(
            pacing=pacing,
            subnet_rest_first_s=timers.subnet_rest_first_s,
            subnet_rest_max_s=timers.subnet_rest_max_s,
            eni_hold_s=timers.half_interval_s * 2,
            account_throttled_at=account_throttled_at,
        )
        self._state = threading.Lock()  # the demand counts
        self._waiting = 0  # ADDs waiting in the allocator for the pool to grow
        self._queued = 0  # ADDs the CNI endpoint has queued for a worker
        self._actions = EniActions(
            network_card=config.network_card,
            store=store,
            cloud=cloud,
            network=network,
            cooldown=cooldown,
            reconciler=reconciler,
            subnet_id=policy.subnet_id,
            security_group_ids=policy.security_group_ids,
        )
        self._runner = GrowthRunner(
            execute=self._execute, on_done=self.wake, workers=pacing.concurrent_enis + ASSIGN_WORKERS
        )

    # --- what the allocator and the process use ---------------------------------------------------

    @property
    def status(self) -> PoolStatus:
        return self._status

    def wake(self) -> None:
        """Run an iteration now (the allocator calls this when an assignment leaves the pool below target)."""
        if self._pacing.wakeups:
            self._wake.set()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """The allocator holds this while an ADD waits for the pool to grow: the pool grows for it."""
        with self._state:
            self._waiting += 1
        self.wake()
        try:
            yield
        finally:
            with self._state:
                self._waiting -= 1

    def queued_adds(self, delta: int) -> None:
        """The CNI endpoint queued (+1) or handed a worker (-1) an ADD: queued ADDs are demand too."""
        with self._state:
            self._queued = max(0, self._queued + delta)
        if delta > 0:
            self.wake()

    def wake_if_low(self, snapshot: PoolSnapshot) -> bool:
        low = is_pool_too_low(snapshot, self._config)
        if low:
            self.wake()
        return low

    def terminate(self) -> None:
        """SIGTERM: from now on ipamd attaches, assigns and frees nothing."""
        self._terminating = True
        self._status = PoolStatus(state=GrowthState.TERMINATING)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"pool-card{self._config.network_card}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._runner.close()

    # --- one iteration ----------------------------------------------------------------------------

    def update_pool(self, *, wait: bool = True) -> PoolStatus:
        """updateIPPoolIfRequired: grow, or shrink (≥30 s apart), then free at most one ENI.

        With `wait` (node init's pre-scale, tests) growth started here has landed on return; the loop does
        not wait, so ADDs that start waiting meanwhile get more ENIs started at once."""
        with self._iteration:
            if self._terminating:
                return self._status
            if self._config.ipv6:
                self._status, assigned = ensure_ipv6_prefix(
                    self._store, self._cloud, provisioning_enabled=self._policy.provisioning_enabled
                )
                if assigned:
                    self._last_action = self._clock.monotonic()
                return self._status
            if not self._policy.provisioning_enabled:
                self._status = PoolStatus(state=GrowthState.PROVISIONING_DISABLED)
                return self._status
            snap = self._store.snapshot()
            if self._runner.busy or self._adds_waiting() or is_pool_too_low(snap, self._config):
                self._grow(wait=wait)
            else:
                at_max = at_max_pods(snap, self._config)
                self._status = PoolStatus(state=GrowthState.AT_MAX_PODS if at_max else GrowthState.OK)
                if is_pool_too_high(snap, self._config):
                    self._shrink()
            if self._may_touch_enis() and not self._runner.busy:
                self._free_one_eni()
            return self._status

    def reconcile_if_idle(self) -> bool:
        """nodeIPPoolReconcile: only after the pool has been idle for 60 s (IMDS is cheap, EC2 is not)."""
        with self._iteration:
            if self._terminating or self._reconciler is None:
                return False
            idle = self._clock.monotonic() - self._last_action >= self._reconcile_idle_s
            if not idle and not self._reconcile_eagerly():
                return False
            self._reconciler.reconcile()
            self._last_action = self._clock.monotonic()
            self._reconcile_idle_s = self._next_reconcile_idle()
            return True

    def _next_reconcile_idle(self) -> float:
        t = self._timers
        return t.reconcile_idle_s * (1 + t.reconcile_jitter * self._rng.random())

    # --- internals --------------------------------------------------------------------------------

    def _may_touch_enis(self) -> bool:
        # Draining nodes keep their ENIs (upstream #1223) unless the operator opted in.
        return self._policy.manage_enis_non_schedulable or self._schedulable()

    def _adds_waiting(self) -> int:
        """ADDs that need an address the pool does not have yet: waiting in the allocator or queued for a
        worker (the queued ones may still find a free address: the projection takes free ones first)."""
        with self._state:
            return self._waiting + self._queued if self._pacing.demand_aware else 0

    def _grow(self, *, wait: bool) -> None:
        if not self._may_touch_enis():
            self._status = PoolStatus(state=GrowthState.UNSCHEDULABLE)
            return
        for _ in range(self._pacing.grow_steps):
            if self._enis_behind.is_set() and self._reconciler is not None:
                self._enis_behind.clear()
                self._reconciler.reconcile()
            growth = self._plan_growth()
            if growth:
                self._runner.run(growth)
            elif not self._runner.busy:
                return  # nothing to start, nothing under way
            if not wait:
                return  # the loop: each action that lands wakes it, and it plans again
            self._runner.wait()

    def _plan_growth(self) -> tuple[Growth, ...]:
        """The growth to start now; none (with the status saying why) when growth must wait."""
        now = self._clock.monotonic()
        rest = self._gate.throttle_rest(now)
        if rest is not None:
            self._status = rest
            return ()
        waiting, yielding = self._adds_waiting(), self._gate.yielding(now)
        growth: tuple[Growth, ...] = ()
        stop: NoAction | None = None
        if waiting:
            # The ENIs the waiting pods need start together (one at a time while EC2 is short of tokens).
            growth, stop = self._plan(
                pods_first(self._config), now, waiting, 1 if yielding else self._pacing.concurrent_enis
            )
        if not growth and not yielding:
            # Warm targets: after the pods, one new ENI at a time (a fleet that scales out together asks
            # EC2 for its pods' ENIs first).
            growth, stop = self._plan(self._config, now, waiting, min(1, self._pacing.concurrent_enis))
        if not growth:
            if yielding and not self._runner.busy and is_pool_too_low(self._store.snapshot(), self._config):
                self._status = self._gate.warm_targets_wait()
            elif stop is not None and not self._runner.busy:
                self._status = _status_for(stop.reason)
            return ()
        held = self._gate.new_enis_held(now)
        if held is not None and any(isinstance(g, AllocateEni) for g in growth):
            growth = tuple(g for g in growth if not isinstance(g, AllocateEni))
            if not growth:  # new ENIs are what the pool needs, and they must wait
                if held.state is not GrowthState.GROWING:
                    self._status = held
                return ()
        self._status = PoolStatus(state=GrowthState.GROWING)
        log.info(
            "growing the pool: %s (%d ADDs waiting, %d actions in flight)",
            ", ".join(_describe(g) for g in growth),
            waiting,
            len(self._runner.inflight()),
        )
        return growth

    def _plan(
        self, config: PoolConfig, now: float, waiting: int, concurrent: int
    ) -> tuple[tuple[Growth, ...], NoAction | None]:
        return plan_growth(
            self._store.snapshot(),
            config,
            inflight=self._runner.inflight(),
            waiting=waiting,
            resting_subnets=self._gate.resting_subnets(now),
            new_enis=concurrent - self._runner.enis_in_flight(),
        )

    def _execute(self, growth: Growth) -> None:
        """One growth action; its failure is recorded (status, subnet rest, throttle back-off), not raised."""
        now = self._clock.monotonic()
        try:
            if isinstance(growth, AssignToEni):
                self._actions.assign(growth)
                self._gate.succeeded(_subnet_of(self._store.snapshot(), growth.eni_id))
            else:
                self._gate.succeeded(self._actions.allocate_eni(growth).subnet_id)
        except CloudError as err:
            if err.code == ATTACHMENT_LIMIT_CODE and self._reconciler is not None:
                # EC2 counts more ENIs on the instance than the datastore holds: one attached late (an attach
                # a killed ipamd sent completes after node init looked) or behind ipamd's back. They are read
                # back before the next growth; waiting for an idle minute would leave ADDs with nothing.
                self._enis_behind.set()
            eni_id = growth.eni_id if isinstance(growth, AssignToEni) else ""
            full = err.subnet_ids or (_subnet_of(self._store.snapshot(), eni_id),)
            status = self._gate.failed(err, full, now)
            if status is not None:
                self._status = status
            return
        except EniSetupError as err:
            self._status = self._gate.eni_setup_failed(err.eni_id, now)
            return
        self._last_action = self._clock.monotonic()

    def _shrink(self) -> None:
        now = self._clock.monotonic()
        if now - self._last_decrease < self._timers.decrease_interval_s:
            return
        self._last_decrease = now
        decision = plan_decrease(self._store.snapshot(), self._config)
        if isinstance(decision, ReleaseCidrs) and self._actions.release_cidrs(decision):
            self._last_action = self._clock.monotonic()

    def _free_one_eni(self) -> None:
        snap = self._store.snapshot()
        decision = plan_free_eni(snap, self._config, min_age_s=self._timers.min_eni_age_s)
        if isinstance(decision, FreeEni) and self._actions.free_eni(decision, snap):
            self._last_action = self._clock.monotonic()

    def _run(self) -> None:
        half = self._timers.half_interval_s
        while not self._stop.is_set():
            self._sleep(half)
            if self._stop.is_set():
                break
            self._guarded(lambda: self.update_pool(wait=False))
            if self._wake.is_set():
                continue  # an allocation drained the pool again: grow before reconciling
            self._sleep(half)
            if self._stop.is_set():
                break
            self._guarded(self.reconcile_if_idle)

    def _sleep(self, timeout_s: float) -> None:
        self._clock.wait(self._wake, timeout_s)
        if not self._stop.is_set():
            self._wake.clear()

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:
            log.exception("pool iteration failed; retrying on the next one")


def _describe(growth: Growth) -> str:
    unit = "prefixes" if growth.prefixes else "IPs"
    if isinstance(growth, AssignToEni):
        return f"{growth.count} {unit} to {growth.eni_id}"
    return f"a new ENI with {growth.size} {unit}"


def _subnet_of(snap: PoolSnapshot, eni_id: str) -> str:
    return next((e.subnet_id for e in snap.enis if e.eni_id == eni_id), "")


def _status_for(reason: NoActionReason) -> PoolStatus:
    if reason is NoActionReason.AT_MAX_PODS:
        return PoolStatus(state=GrowthState.AT_MAX_PODS)
    if reason is NoActionReason.NO_ENI_SLOTS:
        return PoolStatus(state=GrowthState.NO_ENI_SLOTS)
    return PoolStatus(state=GrowthState.OK)
