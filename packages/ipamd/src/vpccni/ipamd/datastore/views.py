"""Upstream's introspection JSON (`ENIInfos`, Go encoding of net.IPNet and time.Time) from the records."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from ipaddress import IPv4Network
from typing import Any

from vpccni.ipamd.datastore.records import AddressRecord, EniState, route_table_id
from vpccni.ipamd.podkey import IPAMKey


def eni_infos_json(enis: Iterable[EniState], network_card: int) -> dict[str, Any]:
    """Upstream's ENIInfos (`/v1/enis` value for one card), unscrubbed. Call under the datastore lock."""
    out: dict[str, Any] = {}
    total = assigned = 0
    for eni in enis:
        rec = eni.record
        cidrs: dict[str, Any] = {}
        for c in eni.cidrs.values():
            if not eni.excluded:
                total += c.network.num_addresses
                assigned += c.assigned
            cidrs[str(c.network)] = {
                "Cidr": _go_ipnet(c.network),
                "IPAddresses": {str(a.ip): _address_json(a) for a in c.tracked.values()},
                "IsPrefix": c.is_prefix,
                "AddressFamily": "4",
            }
        out[rec.eni_id] = {
            "ID": rec.eni_id,
            "IsPrimary": rec.is_primary,
            "IsTrunk": rec.is_trunk,
            "IsEFA": rec.is_efa,
            "DeviceNumber": rec.device_number,
            "AvailableIPv4Cidrs": cidrs,
            "IPv6Cidrs": {},
            "IsExcludedForPodIPs": eni.excluded,
            "RouteTableID": route_table_id(rec.device_number, network_card),
            "SubnetID": rec.subnet_id,
        }
    return {"TotalIPs": total, "AssignedIPs": assigned, "ENIs": out}


def _go_ipnet(network: IPv4Network) -> dict[str, str]:
    """Go's net.IPNet JSON: the IP as text, the mask as a byte slice (base64)."""
    return {"IP": str(network.network_address), "Mask": base64.b64encode(network.netmask.packed).decode()}


def _go_time(ns: int) -> str:
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
        "AssignedTime": _go_time(addr.assigned_ns if addr.key else 0),
        "UnassignedTime": _go_time(addr.unassigned_ns),
    }
