"""The datastore's mutable records (used only under the datastore lock) and the route-table rule."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING

from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.ports import EniRecord
from vpccni.networkutils.tables import route_table_for_eni

if TYPE_CHECKING:
    from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry
    from vpccni.ipamd.pool.snapshot import CidrSnapshot

PREFIX_LEN = 28
SECONDARY_LEN = 32


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

    def __init__(self, ip: IPv4Address, cidr: CidrRecord) -> None:
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
        "is_prefix",
        "network",
        "next_offset",
        "ready",
        "removed",
        "snap",
        "tracked",
    )

    def __init__(self, network: IPv4Network, eni: EniState) -> None:
        self.network = network
        self.eni = eni
        self.is_prefix = network.prefixlen != SECONDARY_LEN
        self.base = int(network.network_address)
        self.tracked: dict[IPv4Address, AddressRecord] = {}
        self.ready: dict[IPv4Address, None] = {}
        self.next_offset = 0
        self.assigned = 0
        self.cooling = 0
        self.removed = False
        self.snap: CidrSnapshot | None = None  # the pool snapshot's view, until the counters change

    def can_serve(self) -> bool:
        return bool(self.ready) or self.next_offset < self.network.num_addresses


class EniState:
    __slots__ = ("added_mono", "assigned", "cidr_snaps", "cidrs", "cooling", "excluded", "record")

    def __init__(self, record: EniRecord, added_mono: float) -> None:
        self.record = record
        self.added_mono = added_mono
        self.cidrs: dict[IPv4Network, CidrRecord] = {}
        self.excluded = False
        self.assigned = 0
        self.cooling = 0
        # The snapshot views of `cidrs`, until one of them changes: a pod's ADD rebuilds one ENI's tuple
        # from cached views, not a view of every CIDR of the pool (in secondary-IP mode, every address).
        self.cidr_snaps: tuple[CidrSnapshot, ...] | None = None


def route_table_id(device_number: int, network_card: int = 0) -> int:
    """Upstream's numbering, owned by networkutils: main for device 0 on card 0, device + 1 else."""
    return route_table_for_eni(device_number, network_card)
