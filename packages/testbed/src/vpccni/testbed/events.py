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


Event = EniAttached | EniDetached | AddressesChanged | StateChanged
