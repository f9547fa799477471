"""Values the datastore hands out: assigned addresses, pool counts, errors (the pod key is `podkey`'s)."""

from __future__ import annotations

from dataclasses import dataclass

from vpccni.ipamd.datastore.records import PodAddress, PodCidr
from vpccni.ipamd.podkey import IPAMKey, PodMetadata


@dataclass(frozen=True, kw_only=True)
class AssignedAddress:
    """A pod's address and where it lives."""

    key: IPAMKey
    metadata: PodMetadata
    ip: PodAddress
    cidr: PodCidr
    eni_id: str
    device_number: int
    network_card: int
    assigned_at_ns: int  # wall clock, UnixNano (the checkpoint's allocationTimestamp)


class DatastoreError(Exception):
    """Base of the datastore's typed errors."""


@dataclass(frozen=True, kw_only=True)
class PoolCounts:
    """Why no address could be handed out, in numbers."""

    total_ips: int  # on usable ENIs, for the active mode
    assigned_ips: int
    in_cooldown: int
    excluded_ips: int  # addresses on ENIs excluded from pod IPs
    other_mode_ips: int  # /32s in prefix mode or /28 addresses in secondary-IP mode (not used)
    prefix_mode: bool
    next_free_in_s: float | None  # when the next address leaves cooldown


class NoAddressAvailable(DatastoreError):
    def __init__(self, counts: PoolCounts) -> None:
        self.counts = counts
        kind = "/28 prefixes" if counts.prefix_mode else "secondary IPs"
        detail = f"{counts.assigned_ips} of {counts.total_ips} addresses on {kind} are assigned"
        if counts.in_cooldown:
            detail += f", {counts.in_cooldown} in cooldown (IP_COOLDOWN_PERIOD)"
            if counts.next_free_in_s is not None:
                detail += f", the next is free in {counts.next_free_in_s:.1f}s"
        if counts.excluded_ips:
            detail += f", {counts.excluded_ips} on ENIs excluded from pod IPs"
        super().__init__(f"no available IP address in the datastore: {detail}")


class UnknownPod(DatastoreError):
    def __init__(self, key: IPAMKey) -> None:
        self.key = key
        super().__init__(
            f"datastore: unknown pod (network {key.network_name}, container {key.container_id}, "
            f"interface {key.ifname})"
        )


class UnknownEni(DatastoreError):
    def __init__(self, eni_id: str) -> None:
        self.eni_id = eni_id
        super().__init__(f"datastore: unknown ENI {eni_id}")


class CidrInUse(DatastoreError):
    def __init__(self, cidr: PodCidr, assigned: int) -> None:
        self.cidr = cidr
        self.assigned = assigned
        super().__init__(f"datastore: {cidr} still has {assigned} pod address(es); release them or force")


class CheckpointWriteFailed(DatastoreError):
    """The assignment or release was rolled back because the checkpoint could not be written."""
