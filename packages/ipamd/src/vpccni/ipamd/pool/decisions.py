"""What the planner tells the pool manager to do: one typed decision per step."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vpccni.networkutils.model import IPNetwork


class NoActionReason(enum.Enum):
    POOL_OK = "the pool meets its warm targets"
    AT_MAX_PODS = "the node already holds as many addresses as it may run pods (max pods)"
    NO_ENI_SLOTS = "every ENI is full and no more ENIs may be attached"
    NOTHING_FREEABLE = "no unused address can be given back"
    NO_DELETABLE_ENI = "no ENI can be freed"


@dataclass(frozen=True, kw_only=True)
class AssignToEni:
    """Add `count` secondary IPs (or `count` /28 prefixes when `prefixes`) to an existing ENI."""

    eni_id: str
    count: int
    prefixes: bool = False


@dataclass(frozen=True, kw_only=True)
class AllocateEni:
    """Attach a new ENI created with `size` secondary IPs (or `size` prefixes when `prefixes`)."""

    size: int
    prefixes: bool = False
    avoid_subnets: frozenset[str] = frozenset()  # resting after EC2 said they are full


@dataclass(frozen=True, kw_only=True)
class EniCidrs:
    eni_id: str
    cidrs: tuple[IPNetwork, ...]


@dataclass(frozen=True, kw_only=True)
class ReleaseCidrs:
    """Give unused CIDRs back to EC2, grouped by ENI."""

    releases: tuple[EniCidrs, ...]

    @property
    def count(self) -> int:
        return sum(len(r.cidrs) for r in self.releases)


@dataclass(frozen=True, kw_only=True)
class FreeEni:
    eni_id: str


@dataclass(frozen=True, kw_only=True)
class NoAction:
    reason: NoActionReason


Decision = AssignToEni | AllocateEni | ReleaseCidrs | FreeEni | NoAction
