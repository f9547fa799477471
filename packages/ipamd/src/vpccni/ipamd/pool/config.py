"""The numbers the warm-pool planner works from, resolved once from settings and instance limits."""

from __future__ import annotations

from dataclasses import dataclass

from vpccni.ipamd.pool.snapshot import PREFIX_SIZE


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """One network card's warm-pool targets and limits.

    `max_enis` is the number of ENIs ipamd may hold on this card: min(instance limit, MAX_ENI) minus the
    unmanaged ENIs. `max_ips_per_eni` is IPv4Limit - 1 (the ENI's own primary IP never goes to a pod); in
    prefix mode `max_prefixes_per_eni` is IPv4Limit - 1 as well.
    """

    max_enis: int
    max_ips_per_eni: int
    max_prefixes_per_eni: int = 0
    max_pods: int = 110
    warm_eni_target: int = 1
    warm_ip_target: int = 0
    minimum_ip_target: int = 0
    warm_prefix_target: int = 0
    prefix_delegation: bool = False
    custom_networking: bool = False  # the primary ENI gets no pod addresses
    reserve_trunk_slot: bool = False  # ENABLE_POD_ENI on a trunking instance without a trunk yet
    network_card: int = 0
    # IPv6 mode: pods are served from the primary ENI's one /80, so there is no warm pool (upstream): the
    # manager only sees that the prefix is there.
    ipv6: bool = False

    def __post_init__(self) -> None:
        if self.network_card > 0:
            # Upstream: cards above 0 always run WARM_IP_TARGET=1 / MINIMUM_IP_TARGET=1.
            object.__setattr__(self, "warm_ip_target", 1)
            object.__setattr__(self, "minimum_ip_target", 1)

    @property
    def warm_ip_targets_defined(self) -> bool:
        return self.warm_ip_target > 0 or self.minimum_ip_target > 0

    @property
    def warm_prefix_target_defined(self) -> bool:
        return self.prefix_delegation and self.warm_prefix_target > 0

    @property
    def cidrs_per_eni(self) -> int:
        """How many CIDRs (secondary /32s, or /28 prefixes) one ENI can hold."""
        return self.max_prefixes_per_eni if self.prefix_delegation else self.max_ips_per_eni

    @property
    def addresses_per_eni(self) -> int:
        return self.max_prefixes_per_eni * PREFIX_SIZE if self.prefix_delegation else self.max_ips_per_eni
