"""Build an instance's metadata tree (paths under /latest/meta-data/) from the EC2 state, as IMDS shows it."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from vpccni.testbed.ec2.backend import MotoBackend

# path (relative to meta-data/, no leading slash) -> value
Snapshot = dict[str, str]


def _hostname(ip: str, region: str) -> str:
    return f"ip-{ip.replace('.', '-')}.{region}.compute.internal"


def build_snapshot(
    backend: MotoBackend,
    instance_id: str,
    prefixes_of: Callable[[str], list[ipaddress.IPv4Network]],
    slot_of: Callable[[str], tuple[int, int] | None],
    *,
    ipv6_prefixes_of: Callable[[str], list[ipaddress.IPv6Network]] = lambda eni_id: [],
) -> Snapshot:
    inst = backend.instance(instance_id)
    region = backend.region
    nics: dict[int, Any] = dict(inst.nics)
    primary = nics[min(nics)] if nics else None
    snap: Snapshot = {
        "ami-id": str(inst.image_id),
        "instance-id": inst.id,
        "instance-type": inst.instance_type,
        "placement/availability-zone": str(inst.placement.zone),
        "placement/region": region,
    }
    if primary is not None:
        snap["local-ipv4"] = primary.private_ip_address
        snap["mac"] = primary.mac_address
        snap["hostname"] = snap["local-hostname"] = _hostname(primary.private_ip_address, region)
        if primary.ipv6_addresses:  # IMDS 404s `ipv6` on an instance without one
            snap["ipv6"] = str(primary.ipv6_addresses[0])
    for _, eni in sorted(nics.items()):
        base = f"network/interfaces/macs/{eni.mac_address}/"
        view = backend.eni_view(eni.id)
        card, device = slot_of(eni.id) or (0, 0)
        fields = {
            "device-number": str(device),
            "interface-id": eni.id,
            "local-hostname": _hostname(str(view.primary_ip), region),
            "local-ipv4s": "\n".join(str(ip) for ip in [view.primary_ip, *view.secondary_ips]),
            "mac": eni.mac_address,
            "network-card": str(card),
            "owner-id": backend.account_id,
            "security-group-ids": "\n".join(view.security_group_ids),
            "subnet-id": view.subnet_id,
            "subnet-ipv4-cidr-block": str(backend.subnet_cidr(view.subnet_id)),
            "vpc-id": view.vpc_id,
            "vpc-ipv4-cidr-block": str(backend.vpc_cidrs(view.vpc_id)[0]),
            "vpc-ipv4-cidr-blocks": "\n".join(str(c) for c in backend.vpc_cidrs(view.vpc_id)),
        }
        prefixes = prefixes_of(eni.id)
        if prefixes:  # IMDS 404s ipv4-prefix on an ENI without prefixes
            fields["ipv4-prefix"] = "\n".join(str(p) for p in prefixes)
        if eni.ipv6_addresses:
            fields["ipv6s"] = "\n".join(str(ip) for ip in eni.ipv6_addresses)
        ipv6_prefixes = ipv6_prefixes_of(eni.id)
        if ipv6_prefixes:
            fields["ipv6-prefix"] = "\n".join(str(p) for p in ipv6_prefixes)
        subnet_v6 = backend.subnet_ipv6_cidr(view.subnet_id)
        if subnet_v6 is not None:
            fields["subnet-ipv6-cidr-blocks"] = str(subnet_v6)
        vpc_v6 = backend.vpc_ipv6_cidrs(view.vpc_id)
        if vpc_v6:
            fields["vpc-ipv6-cidr-blocks"] = "\n".join(str(c) for c in vpc_v6)
        snap.update({base + key: value for key, value in fields.items()})
    return snap


def lookup(snapshot: Snapshot, path: str) -> str | None:
    """A leaf's value, or a directory listing (children, sub-directories with a trailing '/'); None = 404."""
    if path in snapshot:
        return snapshot[path]
    directory = path if path.endswith("/") or path == "" else path + "/"
    children: list[str] = []
    for key in snapshot:
        if key.startswith(directory):
            head, sep, _ = key[len(directory) :].partition("/")
            child = head + sep
            if child not in children:
                children.append(child)
    if not children:
        return None
    # EC2 lists a MAC directory only with the trailing slash; other listings work either way.
    return "\n".join(sorted(children))
