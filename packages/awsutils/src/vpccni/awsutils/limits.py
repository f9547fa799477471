"""Per-instance-type ENI/IP limits (static table, DescribeInstanceTypes fallback) and max pods."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from vpccni.awsutils.errors import AwsUtilsError, UnknownInstanceTypeError
from vpccni.awsutils.limits_data import LIMITS

log = logging.getLogger(__name__)

# Recommended max-pods ceilings of amazon-eks-ami's max-pods-calculator.sh.
MAX_POD_CEILING_LOW_CPU = 110
MAX_POD_CEILING_HIGH_CPU = 250
LOW_CPU_MAX_VCPUS = 30
# Pods on the host network (aws-node, kube-proxy) that use no ENI address.
HOST_NETWORK_PODS = 2
IPS_PER_PREFIX = 16


@dataclass(frozen=True, kw_only=True)
class InstanceLimits:
    instance_type: str
    max_enis: int
    ipv4_per_eni: int
    default_network_card: int
    network_cards: Mapping[int, int]  # card index -> max ENIs on that card
    hypervisor: str  # "nitro", "xen" or "" (bare metal)
    bare_metal: bool
    vcpus: int

    @property
    def supports_prefix_delegation(self) -> bool:
        """PD needs a Nitro or bare-metal instance."""
        return self.hypervisor == "nitro" or self.bare_metal

    def max_enis_on_card(self, card: int) -> int:
        return self.network_cards.get(card, 0)

    @classmethod
    def from_row(cls, instance_type: str, row: tuple[Any, ...]) -> InstanceLimits:
        enis, ipv4, card, cards, hypervisor, metal, vcpus = row
        return cls(
            instance_type=instance_type,
            max_enis=enis,
            ipv4_per_eni=ipv4,
            default_network_card=card,
            network_cards=dict(cards),
            hypervisor=hypervisor,
            bare_metal=metal,
            vcpus=vcpus,
        )

    @classmethod
    def from_describe(cls, record: Mapping[str, Any]) -> InstanceLimits:
        """Build from one ``DescribeInstanceTypes`` ``InstanceTypes[]`` record."""
        net = record["NetworkInfo"]
        cards = {
            int(c["NetworkCardIndex"]): int(c["MaximumNetworkInterfaces"])
            for c in net.get("NetworkCards", [])
        }
        return cls(
            instance_type=str(record["InstanceType"]),
            max_enis=int(net["MaximumNetworkInterfaces"]),
            ipv4_per_eni=int(net["Ipv4AddressesPerInterface"]),
            default_network_card=int(net.get("DefaultNetworkCardIndex", 0)),
            network_cards=cards or {0: int(net["MaximumNetworkInterfaces"])},
            hypervisor=str(record.get("Hypervisor", "")),
            bare_metal=bool(record.get("BareMetal", False)),
            vcpus=int(record.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        )


def static_limits(instance_type: str) -> InstanceLimits | None:
    """Limits from the generated table, or None for a type it does not know."""
    row = LIMITS.get(instance_type)
    return None if row is None else InstanceLimits.from_row(instance_type, row)


def known_instance_types() -> list[str]:
    return sorted(LIMITS)


class InstanceTypeSource(Protocol):
    def describe_instance_type(self, instance_type: str) -> Mapping[str, Any] | None:
        """The DescribeInstanceTypes record for the type, or None if EC2 does not know it."""


class LimitsCatalog:
    """Static table first, then ``DescribeInstanceTypes`` (cached), as upstream's FetchInstanceTypeLimits."""

    def __init__(self, source: InstanceTypeSource | None = None) -> None:
        self._source = source
        self._cache: dict[str, InstanceLimits] = {}
        self._lock = threading.Lock()

    def get(self, instance_type: str) -> InstanceLimits:
        found = static_limits(instance_type)
        if found is not None:
            return found
        with self._lock:
            cached = self._cache.get(instance_type)
        if cached is not None:
            return cached
        if self._source is None:
            raise UnknownInstanceTypeError(instance_type)
        try:
            record = self._source.describe_instance_type(instance_type)
        except AwsUtilsError as exc:
            raise UnknownInstanceTypeError(instance_type, str(exc)) from exc
        if record is None:
            raise UnknownInstanceTypeError(instance_type, "DescribeInstanceTypes does not know it")
        limits = InstanceLimits.from_describe(record)
        log.info("instance type %s is not in the static table; using DescribeInstanceTypes", instance_type)
        with self._lock:
            self._cache[instance_type] = limits
        return limits


def max_pods(
    limits: InstanceLimits, *, custom_networking: bool = False, prefix_delegation: bool = False
) -> int:
    """Upstream's maximum: ``ENIs * (IPv4 - 1) + 2``; PD ``ENIs * ((IPv4 - 1) * 16) + 2``.

    Custom networking puts no pods on the primary ENI, so one ENI fewer counts.
    """
    enis = limits.max_enis - (1 if custom_networking else 0)
    per_eni = limits.ipv4_per_eni - 1
    if prefix_delegation:
        per_eni *= IPS_PER_PREFIX
    return max(0, enis) * per_eni + HOST_NETWORK_PODS


def recommended_max_pods(
    limits: InstanceLimits, *, custom_networking: bool = False, prefix_delegation: bool = False
) -> int:
    """``max_pods`` capped like max-pods-calculator.sh: 110 up to 30 vCPUs, 250 above."""
    ceiling = MAX_POD_CEILING_LOW_CPU if limits.vcpus <= LOW_CPU_MAX_VCPUS else MAX_POD_CEILING_HIGH_CPU
    return min(
        ceiling, max_pods(limits, custom_networking=custom_networking, prefix_delegation=prefix_delegation)
    )
