"""The checkpoint file's format: upstream's `vpc-cni-ipam/1` JSON document, byte for byte.

`{"version":"vpc-cni-ipam/1","allocations":[{networkName, containerID, ifName, ipv4 | ipv6,
allocationTimestamp, metadata: {k8sPodNamespace, k8sPodName, interfacesCount}}]}`, compact, keys in upstream's
struct order (an IPv6 pod's address is written as `ipv6` where an IPv4 pod's is `ipv4`, as upstream). vpccni
adds two metadata keys, which upstream's reader ignores: the host veth name where it is not upstream's, and
the branch ENI of a security-groups-for-pods pod (upstream does not record those pods; its restore drops the
entry as an address on no ENI, and its DEL of such a pod works from the CNI result alone).
Pure: no file, no datastore (`file.py` writes it, `vpccni.ipamd.restore` reads it back into the datastore).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from vpccni.ipamd.podkey import IPAMKey, PodMetadata

_log = logging.getLogger(__name__)

CHECKPOINT_VERSION = "vpc-cni-ipam/1"
HOST_VETH_KEY = "vpccniHostVeth"
BRANCH_ENI_KEY = "vpccniBranchEni"


@dataclass(frozen=True, kw_only=True)
class BranchEniRecord:
    """The branch ENI a pod was wired with (the `vpc.amazonaws.com/pod-eni` annotation's fields)."""

    eni_id: str
    mac: str
    vlan_id: int
    subnet: IPv4Network | IPv6Network  # the pod's family: subnetCidr or subnetV6Cidr


@dataclass(frozen=True, kw_only=True)
class CheckpointEntry:
    key: IPAMKey
    ip: IPv4Address | IPv6Address
    allocation_timestamp_ns: int
    metadata: PodMetadata
    branch: BranchEniRecord | None = None  # a security-groups-for-pods pod: its address is the branch ENI's


class CheckpointError(Exception):
    """The checkpoint cannot be read; the message says which file and how to recover."""


HEAD = b'{"version":"' + CHECKPOINT_VERSION.encode() + b'","allocations":['
TAIL = b"]}"


def encode_entry(e: CheckpointEntry) -> bytes:
    """One allocation as upstream writes it (Go encoding/json: compact, keys in struct order)."""
    metadata: dict[str, object] = {
        "k8sPodNamespace": e.metadata.namespace,
        "k8sPodName": e.metadata.name,
        "interfacesCount": e.metadata.interfaces_count,
    }
    if e.metadata.host_veth:
        # Only where the name is not upstream's: upstream's reader ignores the extra key.
        metadata[HOST_VETH_KEY] = e.metadata.host_veth
    if e.branch is not None:
        metadata[BRANCH_ENI_KEY] = {
            "eniId": e.branch.eni_id,
            "ifAddress": e.branch.mac,
            "vlanId": e.branch.vlan_id,
            "subnetCidr": str(e.branch.subnet),
        }
    return json.dumps(
        {
            "networkName": e.key.network_name,
            "containerID": e.key.container_id,
            "ifName": e.key.ifname,
            "ipv6" if e.ip.version == 6 else "ipv4": str(e.ip),
            "allocationTimestamp": e.allocation_timestamp_ns,
            "metadata": metadata,
        },
        separators=(",", ":"),
    ).encode()


def encode(entries: Sequence[CheckpointEntry]) -> bytes:
    """Upstream's JSON document: `{"version":...,"allocations":[...]}`."""
    return HEAD + b",".join(encode_entry(e) for e in entries) + TAIL


def decode(data: bytes, *, source: str = "checkpoint") -> tuple[CheckpointEntry, ...]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{source} is not valid JSON ({exc}); move it aside to start with no recorded pods"
        ) from None
    if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise CheckpointError(
            f"{source} has version {version!r}, expected {CHECKPOINT_VERSION!r}; it was written by an "
            "incompatible release: move it aside to start with no recorded pods"
        )
    out: list[CheckpointEntry] = []
    for raw in doc.get("allocations") or []:
        entry = _decode_entry(raw)
        if entry is None:
            _log.warning("skipping checkpoint entry without a usable IPv4 or IPv6 address: %s", raw)
        else:
            out.append(entry)
    return tuple(out)


def _decode_entry(raw: Any) -> CheckpointEntry | None:
    if not isinstance(raw, dict):
        return None
    key = "ipv4" if raw.get("ipv4") else "ipv6"
    try:
        ip = ip_address(str(raw.get(key) or ""))
    except ValueError:
        return None
    if ip.version != (4 if key == "ipv4" else 6):
        return None
    meta = raw.get("metadata") or {}
    return CheckpointEntry(
        key=IPAMKey(
            network_name=str(raw.get("networkName", "")),
            container_id=str(raw.get("containerID", "")),
            ifname=str(raw.get("ifName", "")),
        ),
        ip=ip,
        allocation_timestamp_ns=int(raw.get("allocationTimestamp") or 0),
        metadata=PodMetadata(
            namespace=str(meta.get("k8sPodNamespace", "")),
            name=str(meta.get("k8sPodName", "")),
            interfaces_count=int(meta.get("interfacesCount") or 1),
            host_veth=str(meta.get(HOST_VETH_KEY) or ""),
        ),
        branch=_decode_branch(meta.get(BRANCH_ENI_KEY)),
    )


def _decode_branch(raw: Any) -> BranchEniRecord | None:
    if not isinstance(raw, dict):
        return None
    try:
        return BranchEniRecord(
            eni_id=str(raw["eniId"]),
            mac=str(raw["ifAddress"]),
            vlan_id=int(raw["vlanId"]),
            subnet=ip_network(raw["subnetCidr"]),
        )
    except (KeyError, TypeError, ValueError):
        _log.warning("ignoring an unreadable branch ENI record in the checkpoint: %s", raw)
        return None
