"""A read-only picture of the node's address pool, taken from the datastore under its lock.

The pool planner works only on this picture, so its decisions are pure functions that tests can drive with
upstream's published examples, and the datastore lock is never held while EC2 is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address

from vpccni.networkutils.model import IPNetwork

PREFIX_SIZE = 16  # addresses in a /28


@dataclass(frozen=True, kw_only=True)
class CidrSnapshot:
    """One secondary /32, one delegated /28, or an IPv6 /80 on an ENI."""

    cidr: IPNetwork
    is_prefix: bool
    assigned: int  # addresses bound to a pod
    in_cooldown: int = 0  # released addresses not yet reusable (IP_COOLDOWN_PERIOD)

    @property
    def size(self) -> int:
        # Every address, as upstream counts since its v1 datastore: 2^48 for an IPv6 /80 (older releases
        # counted 250, `defaultMaxIPv6addresses`).
        return self.cidr.num_addresses

    @property
    def free(self) -> int:
        return self.size - self.assigned


@dataclass(frozen=True, kw_only=True)
class EniSnapshot:
    eni_id: str
    device_number: int
    is_primary: bool = False
    is_trunk: bool = False
    is_efa: bool = False
    excluded: bool = False  # in a subnet tagged kubernetes.io/role/cni=0: no new pods
    age_s: float = 0.0  # seconds since ipamd first saw the ENI attached
    cidrs: tuple[CidrSnapshot, ...] = ()
    primary_ip: IPv4Address | None = None  # the ENI's own address (its `from` rule goes when it is freed)
    subnet_id: str = ""

    @cached_property
    def total_ips(self) -> int:
        return sum(c.size for c in self.cidrs)

    @cached_property
    def assigned_ips(self) -> int:
        return sum(c.assigned for c in self.cidrs)

    @cached_property
    def in_cooldown(self) -> int:
        return sum(c.in_cooldown for c in self.cidrs)

    @cached_property
    def prefixes(self) -> int:
        """Delegated IPv4 /28s (what prefix delegation's targets count; an IPv6 /80 is not one)."""
        return sum(1 for c in self.cidrs if c.is_prefix and c.cidr.version == 4)

    @cached_property
    def free_prefixes(self) -> int:
        return sum(1 for c in self.cidrs if c.is_prefix and c.cidr.version == 4 and c.assigned == 0)


@dataclass(frozen=True, kw_only=True)
class PoolSnapshot:
    """The pool of one network card. Totals exclude ENIs marked excluded, as upstream does.

    Totals are computed once per snapshot (a snapshot never changes): the planner asks for them several
    times on every ADD."""

    enis: tuple[EniSnapshot, ...] = ()
    # ADDs waiting for an address, counted as assigned (and with them the addresses still cooling down): set
    # only in a growth projection (pool/growth.py), never by the datastore.
    waiting: int = 0

    @cached_property
    def usable_enis(self) -> tuple[EniSnapshot, ...]:
        return tuple(e for e in self.enis if not e.excluded)

    @cached_property
    def total_ips(self) -> int:
        return sum(e.total_ips for e in self.usable_enis)

    @cached_property
    def assigned_ips(self) -> int:
        # An ADD waits only when no free address is out of its cooldown: the cooling ones cannot serve it
        # (nor the ADDs after it), so a projection with waiting ADDs counts them as taken and the pool grows
        # instead of leaving the ADD to wait out IP_COOLDOWN_PERIOD.
        cooling = sum(e.in_cooldown for e in self.usable_enis) if self.waiting else 0
        return sum(e.assigned_ips for e in self.usable_enis) + self.waiting + cooling

    @cached_property
    def available_ips(self) -> int:
        return self.total_ips - self.assigned_ips

    @cached_property
    def total_prefixes(self) -> int:
        return sum(e.prefixes for e in self.usable_enis)

    @cached_property
    def free_prefixes(self) -> int:
        return sum(e.free_prefixes for e in self.usable_enis)
