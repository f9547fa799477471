"""Node init (upstream IPAMContext.New → nodeInit): the ordered steps that make a node ready to hand out
addresses.

Steps, each logged as it starts and each failing with an error that names the step and what to do:
  1. instance limits        4. ENIs from IMDS, confirmed by EC2     7. set up ENI networks   10. pod rules
  2. settings validity      5. managed or unmanaged                 8. restore checkpoint    11. pre-scale
  3. host network           6. tag managed ENIs                     9. mode-toggle cleanup
After step 6, ENIs an earlier run of this node's ipamd created and never attached are deleted (a failure there
is logged, not fatal).

Addresses enter the datastore from EC2's DescribeNetworkInterfaces, not from IMDS (see reconcile.py for why).
Only in ENABLE_IMDS_ONLY_MODE, where ipamd may not call EC2 at all, does IMDS supply them.

IPv6 mode (upstream's, prefix delegation on Nitro only): ipamd manages the primary ENI alone and serves pods
from its /80 prefix; pre-scale assigns the prefix when EC2 shows none, and node init fails when the node ends
up without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.limits import InstanceLimits
from vpccni.ipamd.cards import DEFAULT_CARD, efa_fabric_cards
from vpccni.ipamd.ownership import EniOwnership
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.cooldown import ReconcileCooldown
from vpccni.ipamd.pool.eni_actions import store_eni
from vpccni.ipamd.pool.status import PoolStatus
from vpccni.ipamd.ports import (
    AllocationRestorePort,
    CloudPort,
    EniDescription,
    HostNetworkPort,
    MetadataPort,
    NodeNetworkPort,
    PodRulesPort,
    PoolStore,
    split_cidrs,
)
from vpccni.networkutils.model import IPNetwork

log = logging.getLogger(__name__)

T = TypeVar("T")

SETUP_ENI_ATTEMPTS = 5
SETUP_ENI_RETRY_S = 10.0


class NodeInitError(Exception):
    """Node init stopped at `step`; the message says what the operator can do."""

    def __init__(self, *, step: str, cause: str, hint: str) -> None:
        super().__init__(f"node init failed at step '{step}': {cause}. {hint}")
        self.step = step
        self.hint = hint


@dataclass(frozen=True, kw_only=True)
class InitOptions:
    """What node init takes from the settings (`vpccni.ipamd.plan` builds it)."""

    warm_eni_target: int = 1
    warm_ip_target: int = 0
    minimum_ip_target: int = 0
    warm_prefix_target: int = 0
    prefix_delegation: bool = False  # ENABLE_PREFIX_DELEGATION (used only on Nitro instances)
    custom_networking: bool = False
    provisioning_enabled: bool = True
    imds_only: bool = False  # ENABLE_IMDS_ONLY_MODE: addresses come from IMDS, EC2 is never called
    max_eni_cap: int | None = None
    multi_nic: bool = False  # ENABLE_MULTI_NIC: every card (the daemon gives node init their stores)
    ipv6: bool = False  # ENABLE_IPv6: pods get /128s from the primary ENI's /80 prefix


class LimitsLookup(Protocol):
    def get(self, instance_type: str) -> InstanceLimits: ...


class PoolGrower(Protocol):
    def update_pool(self) -> PoolStatus: ...


@dataclass(frozen=True, kw_only=True)
class NodeIdentity:
    instance_id: str
    instance_type: str
    primary_mac: str
    max_pods: int  # node capacity, else eni-max-pods.txt, else 110 (resolved by the caller)
    reserve_trunk_slot: bool = False  # ENABLE_POD_ENI on a trunking instance


@dataclass(frozen=True, kw_only=True)
class NodeInitResult:
    config: PoolConfig
    primary_eni_id: str
    managed_eni_ids: tuple[str, ...]
    unmanaged_eni_ids: tuple[str, ...]
    restored_allocations: int
    cleaned_cidrs: tuple[IPNetwork, ...]
    pool_status: PoolStatus | None
    card_configs: tuple[PoolConfig, ...] = ()  # ENABLE_MULTI_NIC: every managed card above 0, ascending


@dataclass(frozen=True, kw_only=True)
class NodeInitPorts:
    limits: LimitsLookup
    metadata: MetadataPort
    cloud: CloudPort
    host: HostNetworkPort
    network: NodeNetworkPort
    store: PoolStore  # card 0's
    restore: AllocationRestorePort
    pod_rules: PodRulesPort
    cooldown: ReconcileCooldown
    # ENABLE_MULTI_NIC: the datastore and checkpoint restore of every card above 0 ipamd may manage.
    card_stores: Mapping[int, PoolStore] = field(default_factory=dict)
    card_restores: Mapping[int, AllocationRestorePort] = field(default_factory=dict)
    # Deletes the ENIs an earlier run of this node's ipamd created and never attached; returns their ids.
    unattached_own_enis: Callable[[], Sequence[str]] | None = None

    def store_of(self, card: int) -> PoolStore:
        if card == DEFAULT_CARD:
            return self.store
        store = self.card_stores.get(card)
        if store is None:
            raise RuntimeError(f"network card {card} has no datastore; it is not one ipamd manages")
        return store

    def restore_of(self, card: int) -> AllocationRestorePort:
        return self.restore if card == DEFAULT_CARD else self.card_restores[card]


class NodeInit:
    """Runs the steps once, in order; `run()` returns what the pool manager and the server need."""

    def __init__(
        self,
        *,
        options: InitOptions,
        identity: NodeIdentity,
        ownership: EniOwnership,
        ports: NodeInitPorts,
        grow_pool: Callable[[PoolConfig], PoolGrower] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._options = options
        self._identity = identity
        self._ownership = ownership
        self._ports = ports
        self._grow_pool = grow_pool
        self._clock: Clock = clock or SystemClock()
        self._steps_done: list[str] = []

    @property
    def steps_done(self) -> tuple[str, ...]:
        return tuple(self._steps_done)

    def run(self) -> NodeInitResult:
        p, ident = self._ports, self._identity
        limits = self._step(
            "instance limits",
            "allow ec2:DescribeInstanceTypes in the node role, or run a supported instance type",
            lambda: p.limits.get(ident.instance_type),
        )
        prefix_mode = self._step(
            "settings validity", "fix the settings named above", lambda: self._pd_mode(limits)
        )
        self._step(
            "host network",
            "check that iptables/nftables and ip rules can be programmed (privileged container, NET_ADMIN)",
            p.host.setup_host_network,
        )
        enis = self._step(
            "discover ENIs",
            "check IMDS access (hop limit 2 for IMDSv2 from a pod)"
            " and ec2:DescribeNetworkInterfaces in the node role",
            self._discover,
        )
        primary = next((e for e in enis if e.mac == ident.primary_mac), None)
        if primary is None:
            raise NodeInitError(
                step="discover ENIs",
                cause=f"no attached ENI has the primary MAC {ident.primary_mac}",
                hint="IMDS and EC2 disagree about the primary ENI; restart ipamd once IMDS has settled",
            )
        managed, unmanaged = self._step(
            "managed ENIs", "check the ENIs' tags", lambda: self._split_managed(enis, primary.eni_id)
        )
        cards = self._managed_cards(enis, managed)
        self._step("tag ENIs", "allow ec2:CreateTags in the node role", lambda: self._tag(managed))
        self._remove_unattached_own_enis()
        self._step(
            "set up ENI networks",
            "check that the ENIs' links are up on the host (ip link) and that ip rules/routes can be added",
            lambda: self._setup_enis(managed, primary.eni_id),
        )
        restored = self._step(
            "restore checkpoint",
            "the checkpoint under /var/run/aws-node may be corrupt;"
            " move it away to start with an empty state",
            lambda: sum(p.restore_of(card).restore_allocations() for card in cards),
        )
        cleaned = self._step(
            "mode-toggle cleanup",
            "allow ec2:UnassignPrivateIpAddresses in the node role",
            lambda: [
                c for card in cards for c in self._toggle_cleanup(self._ports.store_of(card), prefix_mode)
            ],
        )
        self._step(
            "pod rules", "check that ip rules can be added on the host", p.pod_rules.configure_pod_rules
        )

        configs = [
            self._pool_config(limits, card, enis, unmanaged, prefix_mode=prefix_mode) for card in cards
        ]
        status = self._step("pre-scale", "see the pool status message", lambda: self._prescale(configs))
        return NodeInitResult(
            config=configs[0],
            primary_eni_id=primary.eni_id,
            managed_eni_ids=tuple(e.eni_id for e in managed),
            unmanaged_eni_ids=tuple(sorted(unmanaged)),
            restored_allocations=restored,
            cleaned_cidrs=tuple(cleaned),
            pool_status=status,
            card_configs=tuple(configs[1:]),
        )

    def _step(self, name: str, hint: str, fn: Callable[[], T]) -> T:
        started = self._clock.monotonic()
        log.info("node init: %s", name)
        try:
            result = fn()
        except NodeInitError:
            raise
        except Exception as err:
            raise NodeInitError(step=name, cause=str(err) or type(err).__name__, hint=hint) from err
        self._steps_done.append(name)
        log.info("node init: %s done in %.2f s", name, self._clock.monotonic() - started)
        return result

    def _pd_mode(self, limits: InstanceLimits) -> bool:
        if self._options.ipv6 and not limits.supports_prefix_delegation:
            raise RuntimeError(
                "ENABLE_IPv6=true needs IPv6 prefix delegation, which EC2 offers only on Nitro and bare-metal"
                f" instances, and {limits.instance_type} is neither: run IPv6 nodes on a Nitro instance type"
                " (e.g. m5.large)"
            )
        if not self._options.prefix_delegation:
            return False
        if not limits.supports_prefix_delegation:
            log.warning(
                "ENABLE_PREFIX_DELEGATION=true but %s is not a Nitro instance; using secondary IPs instead",
                limits.instance_type,
            )
            return False
        return True

    def _discover(self) -> tuple[EniDescription, ...]:
        attached = self._ports.metadata.attached_enis()
        if self._options.imds_only:
            return tuple(EniDescription.from_addresses(e) for e in attached)
        described = self._ports.cloud.describe_enis([e.eni_id for e in attached])
        missing = {e.eni_id for e in attached} - {d.eni_id for d in described}
        if missing:
            log.info("IMDS lists ENIs EC2 does not have attached (stale IMDS), ignoring: %s", sorted(missing))
        return tuple(sorted(described, key=lambda d: (d.network_card, d.device_number)))

    def _split_managed(
        self, enis: tuple[EniDescription, ...], primary_id: str
    ) -> tuple[tuple[EniDescription, ...], frozenset[str]]:
        managed, unmanaged = [], set()
        for eni in enis:
            if eni.eni_id == primary_id or self._ownership.manages(eni):
                managed.append(eni)
            else:
                unmanaged.add(eni.eni_id)
        if unmanaged:
            why = (
                " (IPv6 mode manages the primary and trunk ENIs only, as upstream)"
                if self._ownership.primary_only
                else ""
            )
            log.info("ENIs ipamd leaves alone%s: %s", why, sorted(unmanaged))
        return tuple(managed), frozenset(unmanaged)

    def _managed_cards(
        self, enis: tuple[EniDescription, ...], managed: tuple[EniDescription, ...]
    ) -> tuple[int, ...]:
        """Card 0, then every card with a datastore that is not the EFA fabric's (`cards.py`)."""
        fabric = efa_fabric_cards(enis, {e.eni_id for e in managed})
        if fabric:
            log.info(
                "network cards left to EFA (an EFA-only ENI and nothing ipamd manages): %s", sorted(fabric)
            )
        others = sorted(c for c in self._ports.card_stores if c != DEFAULT_CARD and c not in fabric)
        return (DEFAULT_CARD, *others)

    def _pool_config(
        self,
        limits: InstanceLimits,
        card: int,
        enis: tuple[EniDescription, ...],
        unmanaged: frozenset[str],
        *,
        prefix_mode: bool,
    ) -> PoolConfig:
        """One card's limits and targets: its own ENI limit (capped by MAX_ENI) less the ENIs ipamd leaves
        alone there; cards above 0 have no primary ENI and no trunk."""
        s, ident, cap = self._options, self._identity, self._options.max_eni_cap
        card_enis = limits.max_enis_on_card(card) or (limits.max_enis if card == DEFAULT_CARD else 0)
        unmanaged_on_card = sum(1 for e in enis if e.eni_id in unmanaged and e.network_card == card)
        first = card == DEFAULT_CARD
        return PoolConfig(
            max_enis=max(0, (min(card_enis, cap) if cap else card_enis) - unmanaged_on_card),
            max_ips_per_eni=(limits.ipv4_per_eni - 1) * (16 if prefix_mode else 1),
            max_prefixes_per_eni=limits.ipv4_per_eni - 1 if prefix_mode else 0,
            max_pods=ident.max_pods,
            warm_eni_target=s.warm_eni_target,
            warm_ip_target=s.warm_ip_target,
            minimum_ip_target=s.minimum_ip_target,
            warm_prefix_target=s.warm_prefix_target,
            prefix_delegation=prefix_mode,
            custom_networking=s.custom_networking and first,
            reserve_trunk_slot=first and ident.reserve_trunk_slot and not any(e.is_trunk for e in enis),
            network_card=card,
            ipv6=s.ipv6,
        )

    def _tag(self, managed: tuple[EniDescription, ...]) -> None:
        if not self._options.provisioning_enabled:
            return
        for eni in managed:
            self._ownership.tag(self._ports.cloud, eni)

    def _remove_unattached_own_enis(self) -> None:
        """ENIs an earlier ipamd of this node created and never attached (killed between the two calls;
        docs/design/eni-ownership.md). Before the pool creates any ENI, so none is one about to be attached.
        Not a failure of node init: the hourly leak sweep deletes what is left."""
        remove = self._ports.unattached_own_enis
        if remove is None or not self._options.provisioning_enabled:
            return
        try:
            deleted = remove()
        except Exception as err:
            log.warning("node init: looking for ENIs an earlier run left unattached failed: %s", err)
            return
        if deleted:
            log.info("node init: deleted %d ENIs an earlier run created and never attached: %s",
                     len(deleted), ", ".join(deleted))  # fmt: skip

    def _setup_enis(self, managed: tuple[EniDescription, ...], primary_id: str) -> None:
        for eni in managed:
            is_primary = eni.eni_id == primary_id
            if not is_primary:
                self._setup_with_retries(eni)
            store_eni(
                self._ports.store_of(eni.network_card), eni, is_primary=is_primary, ipv6=self._options.ipv6
            )

    def _setup_with_retries(self, eni: EniDescription) -> None:
        for attempt in range(1, SETUP_ENI_ATTEMPTS + 1):
            try:
                self._ports.network.setup_eni(eni)
                return
            except Exception as err:
                if attempt == SETUP_ENI_ATTEMPTS:
                    raise RuntimeError(
                        f"setting up ENI {eni.eni_id} ({eni.mac}) failed {attempt} times: {err}"
                    ) from err
                log.warning(
                    "setting up ENI %s failed (%s); retrying in %.0f s", eni.eni_id, err, SETUP_ENI_RETRY_S
                )
                self._clock.sleep(SETUP_ENI_RETRY_S)

    def _toggle_cleanup(self, store: PoolStore, prefix_mode: bool) -> tuple[IPNetwork, ...]:
        """Give back unused CIDRs of the mode not in use (after PD was switched on or off). IPv6 mode holds
        nothing else."""
        if not self._options.provisioning_enabled or self._options.ipv6:
            return ()
        p = self._ports
        cleaned: list[IPNetwork] = []
        for eni in store.snapshot().enis:
            stray = [c.cidr for c in eni.cidrs if c.is_prefix != prefix_mode and c.assigned == 0]
            if not stray:
                continue
            removed = store.remove_cidrs(eni.eni_id, stray)
            if not removed:
                continue
            p.cooldown.add(removed)
            ips, prefixes = split_cidrs(removed)
            p.cloud.unassign(eni.eni_id, ips=ips, prefixes=prefixes)
            cleaned.extend(removed)
        return tuple(cleaned)

    def _prescale(self, configs: list[PoolConfig]) -> PoolStatus | None:
        """One pool iteration per card; card 0's status is the node's."""
        grow = self._grow_pool if self._options.provisioning_enabled else None
        statuses = [grow(config).update_pool() for config in configs] if grow is not None else []
        why = statuses[0].message if statuses else "provisioning is disabled"
        snapshot = self._ports.store.snapshot()
        if configs[0].ipv6 and not any(c.cidr.version == 6 for e in snapshot.enis for c in e.cidrs):
            raise RuntimeError(
                f"IPv6 mode and the primary ENI has no IPv6 /80 prefix: {why}. Check that its subnet has an"
                " IPv6 CIDR and that the node role allows ec2:AssignIpv6Addresses"
            )
        if not statuses:
            return None
        if configs[0].custom_networking and snapshot.total_ips == 0:
            raise RuntimeError(f"custom networking is on and the pool is empty after pre-scale: {why}")
        return statuses[0]
