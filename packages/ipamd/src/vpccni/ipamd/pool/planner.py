"""Upstream's warm-pool math (ipamd.go + datastore), as pure functions over a pool snapshot.

Each function mirrors one upstream function and keeps its name in the docstring, so the two can be
compared line by line. Where upstream iterates a Go map (random order), the planner uses a fixed order
instead: it fills ENIs in device order and takes addresses back from the newest ENI first, so whole ENIs
empty out and can be freed.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.decisions import (
    AllocateEni,
    AssignToEni,
    EniCidrs,
    FreeEni,
    NoAction,
    NoActionReason,
    ReleaseCidrs,
)
from vpccni.ipamd.pool.snapshot import PREFIX_SIZE, CidrSnapshot, EniSnapshot, PoolSnapshot

MIN_ENI_AGE_S = 60.0  # minENILifeTime: a new ENI is never freed before this


def _div_ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, kw_only=True)
class TargetState:
    """datastoreTargetState: how far the pool is below (`short`) or above (`over`) WARM_IP/MINIMUM_IP targets.

    In prefix mode both are counted in /28 prefixes, otherwise in addresses. `enabled` is false when neither
    WARM_IP_TARGET nor MINIMUM_IP_TARGET is set (then both numbers are 0).
    """

    short: int
    over: int
    enabled: bool


def target_state(snap: PoolSnapshot, cfg: PoolConfig) -> TargetState:
    if not cfg.warm_ip_targets_defined:
        return TargetState(short=0, over=0, enabled=False)
    available, total = snap.available_ips, snap.total_ips
    short = max(cfg.warm_ip_target - available, 0)
    short = max(short, cfg.minimum_ip_target - total)
    over = max(available - cfg.warm_ip_target, 0)
    over = max(min(over, total - cfg.minimum_ip_target), 0)
    if not cfg.prefix_delegation:
        return TargetState(short=short, over=over, enabled=True)
    # `over` in addresses ignores that addresses come in /28s: count whole free prefixes beyond what the warm
    # and minimum targets need instead.
    need_for_warm = _div_ceil(snap.assigned_ips + cfg.warm_ip_target, PREFIX_SIZE)
    need_for_min = _div_ceil(cfg.minimum_ip_target, PREFIX_SIZE)
    over_prefixes = max(min(snap.free_prefixes, snap.total_prefixes - need_for_warm), 0)
    over_prefixes = max(min(over_prefixes, snap.total_prefixes - need_for_min), 0)
    return TargetState(short=_div_ceil(short, PREFIX_SIZE), over=over_prefixes, enabled=True)


def at_max_pods(snap: PoolSnapshot, cfg: PoolConfig) -> bool:
    """The node already holds an address for every pod it may run (upstream v1.16.3, #2745)."""
    return snap.total_ips >= cfg.max_pods


def is_pool_too_low(snap: PoolSnapshot, cfg: PoolConfig) -> bool:
    """isDatastorePoolTooLow."""
    if at_max_pods(snap, cfg):
        return False
    state = target_state(snap, cfg)
    if state.enabled:
        return state.short > 0
    available = snap.available_ips
    if cfg.prefix_delegation:
        warm, per_unit = cfg.warm_prefix_target, PREFIX_SIZE
    else:
        warm, per_unit = cfg.warm_eni_target, cfg.max_ips_per_eni
    return available < per_unit * warm or (warm == 0 and available == 0)


def is_pool_too_high(snap: PoolSnapshot, cfg: PoolConfig) -> bool:
    """isDatastorePoolTooHigh: plain WARM_ENI_TARGET is never too high (whole ENIs are freed instead)."""
    state = target_state(snap, cfg)
    if state.enabled:
        return state.over > 0
    if cfg.prefix_delegation:
        return snap.free_prefixes > cfg.warm_prefix_target
    return False


def prefixes_needed(snap: PoolSnapshot, cfg: PoolConfig) -> int:
    """getPrefixesNeeded: WARM_IP/MINIMUM_IP targets win over WARM_PREFIX_TARGET; at least one."""
    state = target_state(snap, cfg)
    if state.enabled:
        return max(1, state.short)
    if cfg.warm_prefix_target_defined:
        return max(1, cfg.warm_prefix_target - snap.free_prefixes)
    return 1


def _mode_cidrs(eni: EniSnapshot, cfg: PoolConfig) -> tuple[CidrSnapshot, ...]:
    return tuple(c for c in eni.cidrs if c.is_prefix == cfg.prefix_delegation)


def allocatable_enis(snap: PoolSnapshot, cfg: PoolConfig) -> tuple[EniSnapshot, ...]:
    """GetAllocatableENIs: ENIs that can take more CIDRs, in device order."""
    return tuple(
        e
        for e in sorted(snap.enis, key=lambda e: e.device_number)
        if not e.is_trunk
        and not e.excluded
        and not (cfg.custom_networking and e.is_primary)
        and len(e.cidrs) < cfg.cidrs_per_eni
    )


def has_room_for_eni(snap: PoolSnapshot, cfg: PoolConfig) -> bool:
    """hasRoomForEni: `max_enis` already excludes unmanaged ENIs; one slot stays free for a future trunk
    until the trunk is there (it then takes the slot itself)."""
    reserve = cfg.reserve_trunk_slot and not any(e.is_trunk for e in snap.enis)
    return len(snap.enis) < cfg.max_enis - (1 if reserve else 0)


def plan_increase(
    snap: PoolSnapshot, cfg: PoolConfig, *, resting_subnets: frozenset[str] = frozenset()
) -> AssignToEni | AllocateEni | NoAction:
    """increaseDatastorePool: fill an existing ENI first (tryAssignCidrs), else attach a new one
    (tryAllocateENI). ENIs in `resting_subnets` (EC2 just said they are full) are passed over, and a new ENI
    goes to another subnet."""
    if not is_pool_too_low(snap, cfg):
        return NoAction(
            reason=NoActionReason.AT_MAX_PODS if at_max_pods(snap, cfg) else NoActionReason.POOL_OK
        )
    state = target_state(snap, cfg)
    if cfg.prefix_delegation:
        wanted = prefixes_needed(snap, cfg)
    else:
        wanted = state.short if state.enabled else cfg.max_ips_per_eni
    for eni in allocatable_enis(snap, cfg):
        if eni.subnet_id in resting_subnets:
            continue
        room = cfg.cidrs_per_eni - len(eni.cidrs)
        return AssignToEni(eni_id=eni.eni_id, count=min(room, wanted), prefixes=cfg.prefix_delegation)
    if has_room_for_eni(snap, cfg):
        return AllocateEni(
            size=min(wanted, cfg.cidrs_per_eni), prefixes=cfg.prefix_delegation, avoid_subnets=resting_subnets
        )
    return NoAction(reason=NoActionReason.NO_ENI_SLOTS)


def _release_order(snap: PoolSnapshot) -> tuple[EniSnapshot, ...]:
    return tuple(sorted(snap.usable_enis, key=lambda e: e.device_number, reverse=True))


def plan_decrease(snap: PoolSnapshot, cfg: PoolConfig) -> ReleaseCidrs | NoAction:
    """decreaseDatastorePool → tryUnassignCidrsFromAll: free up to `over` CIDRs that hold no pod.

    A CIDR with an address still in IP_COOLDOWN_PERIOD is kept: EC2 could hand that address to another node
    while endpoints still point at the pod that just left.
    """
    if not is_pool_too_high(snap, cfg):
        return NoAction(reason=NoActionReason.POOL_OK)
    state = target_state(snap, cfg)
    over = state.over if state.enabled else max(snap.free_prefixes - cfg.warm_prefix_target, 0)
    releases: list[EniCidrs] = []
    for eni in _release_order(snap):
        if over <= 0:
            break
        freeable = [c.cidr for c in _mode_cidrs(eni, cfg) if c.assigned == 0 and c.in_cooldown == 0][:over]
        if freeable:
            releases.append(EniCidrs(eni_id=eni.eni_id, cidrs=tuple(freeable)))
            over -= len(freeable)
    if not releases:
        return NoAction(reason=NoActionReason.NOTHING_FREEABLE)
    return ReleaseCidrs(releases=tuple(releases))


def _round_to_prefixes(n: int, cfg: PoolConfig) -> int:
    return _div_ceil(n, PREFIX_SIZE) * PREFIX_SIZE if cfg.prefix_delegation else n


def _required_for_targets(snap: PoolSnapshot, cfg: PoolConfig, eni: EniSnapshot) -> bool:
    """isRequiredForWarmIPTarget / ForMinimumIPTarget / ForWarmPrefixTarget: the others alone fall short."""
    others = [o for o in snap.usable_enis if o.eni_id != eni.eni_id]  # an excluded ENI serves no pod
    other_cidrs = [c for o in others for c in _mode_cidrs(o, cfg)]
    if cfg.warm_ip_target and sum(c.free for c in other_cidrs) < _round_to_prefixes(cfg.warm_ip_target, cfg):
        return True
    if cfg.minimum_ip_target and sum(c.size for c in other_cidrs) < _round_to_prefixes(
        cfg.minimum_ip_target, cfg
    ):
        return True
    other_free_prefixes = sum(1 for c in other_cidrs if c.is_prefix and c.assigned == 0)
    return bool(cfg.warm_prefix_target_defined and other_free_prefixes < cfg.warm_prefix_target)


def deletable_eni(
    snap: PoolSnapshot, cfg: PoolConfig, *, min_age_s: float = MIN_ENI_AGE_S
) -> EniSnapshot | None:
    """getDeletableENI: the newest ENI that no pod, cooldown or warm target needs."""
    for eni in _release_order(snap) + tuple(e for e in snap.enis if e.excluded):
        if eni.is_primary or eni.is_trunk or eni.is_efa:
            continue
        if eni.age_s < min_age_s or eni.in_cooldown > 0 or eni.assigned_ips > 0:
            continue
        if _required_for_targets(snap, cfg, eni):
            continue
        return eni
    return None


def should_remove_extra_enis(
    snap: PoolSnapshot, cfg: PoolConfig, *, min_age_s: float = MIN_ENI_AGE_S
) -> bool:
    """shouldRemoveExtraENIs: the +1 keeps the pool at or above WARM_ENI_TARGET / WARM_PREFIX_TARGET after a
    free."""
    if cfg.warm_ip_targets_defined:
        return True  # getDeletableENI's target checks decide
    warm = (cfg.warm_prefix_target if cfg.prefix_delegation else cfg.warm_eni_target) + 1
    if snap.available_ips >= warm * cfg.addresses_per_eni:
        return True
    return cfg.prefix_delegation and deletable_eni(snap, cfg, min_age_s=min_age_s) is not None


def plan_free_eni(
    snap: PoolSnapshot, cfg: PoolConfig, *, min_age_s: float = MIN_ENI_AGE_S
) -> FreeEni | NoAction:
    """tryFreeENI: at most one ENI per call; `min_age_s` is minENILifeTime (VPCCNI_MIN_ENI_AGE)."""
    if not should_remove_extra_enis(snap, cfg, min_age_s=min_age_s):
        return NoAction(reason=NoActionReason.POOL_OK)
    eni = deletable_eni(snap, cfg, min_age_s=min_age_s)
    return FreeEni(eni_id=eni.eni_id) if eni else NoAction(reason=NoActionReason.NO_DELETABLE_ENI)
