"""The datastore's mutable records (used only under the datastore lock), the kinds of CIDR, and the
route-table rule.

A CIDR's kind says what it is and which pods it serves: the datastore hands out addresses of one kind (its
mode), and keeps the others (a mode toggle's leftovers) without serving them. IPv6 mode is one more kind, the
primary ENI's /80 prefix: the index and the store work per kind and never look at prefix lengths themselves.
"""

from __future__ import annotations

import enum
from ipaddress import ip_network
from typing import TYPE_CHECKING

from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.ports import EniRecord
from vpccni.networkutils.model import IPAddress, IPNetwork
from vpccni.networkutils.tables import route_table_for_eni

if TYPE_CHECKING:
    from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry
    from vpccni.ipamd.pool.snapshot import CidrSnapshot

PodAddress = IPAddress  # what a pod gets: an IPv4 address, or an IPv6 one in IPv6 mode
PodCidr = IPNetwork  # a CIDR of such addresses on an ENI


class CidrKind(enum.Enum):
    """(address family, prefix length) of a CIDR ipamd holds on an ENI."""

    SECONDARY_V4 = (4, 32)  # one secondary IPv4 address
    PREFIX_V4 = (4, 28)  # a delegated /28 prefix: 16 pod addresses
    PREFIX_V6 = (6, 80)  # IPv6 mode: the primary ENI's /80 prefix, a /128 per pod

    @property
    def version(self) -> int:
        return self.value[0]

    @property
    def prefixlen(self) -> int:
        return self.value[1]

    @property
    def is_prefix(self) -> bool:
        return self is not CidrKind.SECONDARY_V4

    @classmethod
    def of(cls, network: PodCidr) -> CidrKind:
        for kind in cls:
            if kind.value == (network.version, network.prefixlen):
                return kind
        raise ValueError(
            f"{network} is neither a secondary IPv4 (/32), an IPv4 prefix (/28) nor an IPv6 prefix (/80)"
        )

    @classmethod
    def mode(cls, *, prefix_delegation: bool, ipv6: bool = False) -> CidrKind:
        """The kind pods are served from."""
        if ipv6:
            return cls.PREFIX_V6
        return cls.PREFIX_V4 if prefix_delegation else cls.SECONDARY_V4

    def around(self, ip: IPAddress) -> PodCidr:
        """The CIDR of this kind that holds `ip`."""
        return ip_network((ip, self.prefixlen), strict=False)


class AddressRecord:
    __slots__ = (
        "assigned_ns",
        "cidr",
        "cooling",
        "entry",
        "ip",
        "key",
        "metadata",
        "serial",
        "unassigned_ns",
    )

    def __init__(self, ip: PodAddress, cidr: CidrRecord) -> None:
        self.ip = ip
        self.cidr = cidr
        self.key: IPAMKey | None = None
        self.metadata = PodMetadata()
        self.assigned_ns = 0
        self.unassigned_ns = 0
        self.cooling = False
        self.serial = 0  # bumped on every state change; stale cooldown entries carry an old one
        # The checkpoint's entry while assigned, made once per assignment (not once per checkpoint write).
        self.entry: CheckpointEntry | None = None


class CidrRecord:
    __slots__ = (
        "assigned",
        "base",
        "cooling",
        "eni",
        "kind",
        "network",
        "next_offset",
        "ready",
        "removed",
        "snap",
        "tracked",
    )

    def __init__(self, network: PodCidr, kind: CidrKind, eni: EniState) -> None:
        self.network = network
        self.kind = kind
        self.eni = eni
        self.base = network.network_address
        self.tracked: dict[PodAddress, AddressRecord] = {}
        self.ready: dict[PodAddress, None] = {}
        self.next_offset = 0
        self.assigned = 0
        self.cooling = 0
        self.removed = False
        self.snap: CidrSnapshot | None = None  # the pool snapshot's view, until the counters change

    @property
    def is_prefix(self) -> bool:
        return self.kind.is_prefix

    def can_serve(self) -> bool:
        return bool(self.ready) or self.next_offset < self.network.num_addresses


class EniState:
    __slots__ = ("added_mono", "assigned", "cidr_snaps", "cidrs", "cooling", "excluded", "record")

    def __init__(self, record: EniRecord, added_mono: float) -> None:
        self.record = record
        self.added_mono = added_mono
        self.cidrs: dict[PodCidr, CidrRecord] = {}
        self.excluded = False
        self.assigned = 0
        self.cooling = 0
        # The snapshot views of `cidrs`, until one of them changes: a pod's ADD rebuilds one ENI's tuple
        # from cached views, not a view of every CIDR of the pool (in secondary-IP mode, every address).
        self.cidr_snaps: tuple[CidrSnapshot, ...] | None = None


def route_table_id(device_number: int, network_card: int = 0) -> int:
    """Upstream's numbering, owned by networkutils: main for device 0 on card 0, device + 1 else."""
    return route_table_for_eni(device_number, network_card)
