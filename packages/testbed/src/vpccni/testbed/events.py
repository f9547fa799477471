"""EC2 state-change events the testbed publishes (the datapath turns them into links and VPC routes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class EniAttached:
    instance_id: str
    eni_id: str
    mac: str
    device_index: int
    network_card: int


@dataclass(frozen=True, kw_only=True)
class EniDetached:
    instance_id: str
    eni_id: str
    mac: str


@dataclass(frozen=True, kw_only=True)
class AddressesChanged:
    eni_id: str


@dataclass(frozen=True, kw_only=True)
class StateChanged:
    """Any successful mutating EC2 call (IMDS snapshots are taken on it)."""

    action: str
    eni_id: str = ""  # the call's NetworkInterfaceId, if it has one


@dataclass(frozen=True, kw_only=True)
class BranchAssociated:
    """A branch ENI was associated with a trunk under a VLAN (security groups for pods)."""

    branch_eni_id: str
    trunk_eni_id: str
    vlan_id: int
    mac: str


@dataclass(frozen=True, kw_only=True)
class BranchDisassociated:
    branch_eni_id: str
    trunk_eni_id: str


Event = EniAttached | EniDetached | AddressesChanged | StateChanged | BranchAssociated | BranchDisassociated
