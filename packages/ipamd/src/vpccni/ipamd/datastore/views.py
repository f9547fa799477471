"""Read-only views of the records, taken under the datastore lock: the pool snapshot the planner works on,
the counts behind "no address available", a pod's assigned address, and upstream's introspection JSON
(`ENIInfos`, Go encoding of net.IPNet and time.Time). An IPv6 /80 counts as its 2^48 addresses in every total,
as upstream counts it."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from typing import Any

from vpccni.ipamd.datastore.index import AllocationIndex
from vpccni.ipamd.datastore.model import AssignedAddress, PoolCounts
from vpccni.ipamd.datastore.records import AddressRecord, CidrRecord, EniState, route_table_id
from vpccni.ipamd.podkey import IPAMKey
from vpccni.ipamd.pool.snapshot import CidrSnapshot, EniSnapshot, PoolSnapshot
from vpccni.networkutils.model import IPNetwork


def snapshot(index: AllocationIndex, *, now: float) -> PoolSnapshot:
    """The pool as the planner sees it. Unchanged CIDRs and ENIs reuse their cached views."""
    return PoolSnapshot(
        enis=tuple(
            EniSnapshot(
                eni_id=eni.record.eni_id,
                device_number=eni.record.device_number,
                is_primary=eni.record.is_primary,
                is_trunk=eni.record.is_trunk,
                is_efa=eni.record.is_efa,
                primary_ip=eni.record.primary_ip,
                subnet_id=eni.record.subnet_id,
                excluded=eni.excluded,
                age_s=now - eni.added_mono,
                cidrs=_cidr_snapshots(eni),
            )
            for eni in index.enis.values()
        )
    )


def _cidr_snapshots(eni: EniState) -> tuple[CidrSnapshot, ...]:
    if eni.cidr_snaps is None:
        eni.cidr_snaps = tuple(c.snap or _cidr_snapshot(c) for c in eni.cidrs.values())
    return eni.cidr_snaps


def _cidr_snapshot(cidr: CidrRecord) -> CidrSnapshot:
    cidr.snap = CidrSnapshot(
        cidr=cidr.network, is_prefix=cidr.is_prefix, assigned=cidr.assigned, in_cooldown=cidr.cooling
    )
    return cidr.snap


def counts(index: AllocationIndex, *, next_free_in_s: float | None) -> PoolCounts:
    """Why no address could be handed out, in numbers (the served kind only, excluded ENIs apart)."""
    total = assigned = cooling = excluded = other = 0
    for eni in index.enis.values():
        for c in eni.cidrs.values():
            size = c.network.num_addresses
            if eni.excluded:
                excluded += size
            elif c.kind is not index.serves:
                other += size
            else:
                total += size
                assigned += c.assigned
                cooling += c.cooling
    return PoolCounts(
        total_ips=total,
        assigned_ips=assigned,
        in_cooldown=cooling,
        excluded_ips=excluded,
        other_mode_ips=other,
        prefix_mode=index.serves.is_prefix,
        next_free_in_s=next_free_in_s,
    )


def assigned(addr: AddressRecord, *, network_card: int) -> AssignedAddress:
    """A pod's address and where it lives (the record must be assigned)."""
    assert addr.key is not None
    rec = addr.cidr.eni.record
    return AssignedAddress(
        key=addr.key,
        metadata=addr.metadata,
        ip=addr.ip,
        cidr=addr.cidr.network,
        eni_id=rec.eni_id,
        device_number=rec.device_number,
        network_card=network_card,
        assigned_at_ns=addr.assigned_ns,
    )


def eni_infos_json(enis: Iterable[EniState], network_card: int) -> dict[str, Any]:
    """Upstream's ENIInfos (`/v1/enis` value for one card), unscrubbed. Call under the datastore lock."""
    out: dict[str, Any] = {}
    total = assigned = 0
    for eni in enis:
        rec = eni.record
        cidrs: dict[int, dict[str, Any]] = {4: {}, 6: {}}
        for c in eni.cidrs.values():
            if not eni.excluded:
                total += c.network.num_addresses
                assigned += c.assigned
            cidrs[c.network.version][str(c.network)] = {
                "Cidr": _go_ipnet(c.network),
                "IPAddresses": {str(a.ip): _address_json(a) for a in c.tracked.values()},
                "IsPrefix": c.is_prefix,
                "AddressFamily": str(c.network.version),
            }
        out[rec.eni_id] = {
            "ID": rec.eni_id,
            "IsPrimary": rec.is_primary,
            "IsTrunk": rec.is_trunk,
            "IsEFA": rec.is_efa,
            "DeviceNumber": rec.device_number,
            "AvailableIPv4Cidrs": cidrs[4],
            "IPv6Cidrs": cidrs[6],
            "IsExcludedForPodIPs": eni.excluded,
            "RouteTableID": route_table_id(rec.device_number, network_card),
            "SubnetID": rec.subnet_id,
        }
    return {"TotalIPs": total, "AssignedIPs": assigned, "ENIs": out}


def _go_ipnet(network: IPNetwork) -> dict[str, str]:
    """Go's net.IPNet JSON: the IP as text, the mask as a byte slice (base64)."""
    return {"IP": str(network.network_address), "Mask": base64.b64encode(network.netmask.packed).decode()}


def go_time(ns: int) -> str:
    """Go's time.Time JSON (RFC 3339 with nanoseconds); zero time for "never"."""
    if ns <= 0:
        return "0001-01-01T00:00:00Z"
    seconds, frac = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}".rstrip("0").rstrip(".") + "Z"


def _address_json(addr: AddressRecord) -> dict[str, Any]:
    key = addr.key or IPAMKey(network_name="", container_id="", ifname="")
    return {
        "Address": str(addr.ip),
        "IPAMKey": {"networkName": key.network_name, "containerID": key.container_id, "ifName": key.ifname},
        "IPAMMetadata": {
            "k8sPodNamespace": addr.metadata.namespace,
            "k8sPodName": addr.metadata.name,
            "interfacesCount": addr.metadata.interfaces_count if addr.key else 0,
        },
        "AssignedTime": go_time(addr.assigned_ns if addr.key else 0),
        "UnassignedTime": go_time(addr.unassigned_ns),
    }
