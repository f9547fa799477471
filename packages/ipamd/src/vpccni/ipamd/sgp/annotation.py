"""The `vpc.amazonaws.com/pod-eni` annotation the VPC resource controller writes on a branch-ENI pod.

A JSON list of `{eniId, ifAddress, privateIp, ipv6Addr, vlanId, subnetCidr, subnetV6Cidr}`; the first entry
is the pod's (upstream's AddNetwork reads only that one). Keys are matched case-insensitively, as Go's
encoding/json matches them (upstream's reader says `vlanID`, the controller writes `vlanId`).

The pod gets the branch ENI's address of the node's family: `privateIp` in `subnetCidr` on an IPv4 node,
`ipv6Addr` in `subnetV6Cidr` on an IPv6 node (the controller fills both on a dual-stack subnet). The IPv6
gateway is EC2's router at `fe80:ec2::1`, the same link-local address on every ENI (upstream's
GetIPv6Gateway); the IPv4 one the subnet's first host (GetIPv4Gateway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from vpccni.k8sapi.names import POD_ENI_ANNOTATION
from vpccni.networkutils.localrule import EC2_ROUTER

MAX_VLAN_ID = 4094


class PodEniAnnotationError(ValueError):
    """The annotation is not what the VPC resource controller writes; the message names the problem."""


@dataclass(frozen=True, kw_only=True)
class BranchEni:
    eni_id: str
    mac: str
    ip: IPv4Address | IPv6Address  # the pod's address: the node's family
    vlan_id: int
    subnet: IPv4Network | IPv6Network  # the branch subnet's block of that family

    def __post_init__(self) -> None:
        if self.ip.version != self.subnet.version:
            raise ValueError(f"branch ENI {self.eni_id}: {self.ip} and subnet {self.subnet} differ in family")

    @property
    def gateway(self) -> IPv4Address | IPv6Address:
        """The branch subnet's VPC router: the subnet's first host (IPv4), `fe80:ec2::1` (IPv6)."""
        return EC2_ROUTER if self.ip.version == 6 else self.subnet.network_address + 1


def parse_pod_eni(text: str, *, ipv6: bool = False) -> BranchEni:
    """The pod's branch ENI from the annotation's value, with the address of the node's family (`ipv6`: an
    ENABLE_IPv6 node); raises PodEniAnnotationError."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PodEniAnnotationError(f"{POD_ENI_ANNOTATION} is not JSON ({exc.msg})") from None
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
        raise PodEniAnnotationError(f"{POD_ENI_ANNOTATION} is not a non-empty JSON list of branch ENIs")
    first = {str(k).lower(): v for k, v in doc[0].items()}
    eni_id = _text(first, "eniid")
    mac = _text(first, "ifaddress").lower()
    if not eni_id.startswith("eni-"):
        raise PodEniAnnotationError(f"{POD_ENI_ANNOTATION} has no branch ENI id (eniId {eni_id!r})")
    if len(mac.split(":")) != 6 or not all(len(p) == 2 and _hex(p) for p in mac.split(":")):
        raise PodEniAnnotationError(f"{POD_ENI_ANNOTATION} has no usable MAC (ifAddress {mac!r})")
    vlan = first.get("vlanid")
    if not isinstance(vlan, int) or isinstance(vlan, bool) or not 1 <= vlan <= MAX_VLAN_ID:
        raise PodEniAnnotationError(
            f"{POD_ENI_ANNOTATION} has no VLAN id in 1-{MAX_VLAN_ID} (vlanId {vlan!r})"
        )
    ip_key, subnet_key = ("ipv6Addr", "subnetV6Cidr") if ipv6 else ("privateIp", "subnetCidr")
    version = 6 if ipv6 else 4
    raw_ip, raw_subnet = _text(first, ip_key.lower()), _text(first, subnet_key.lower())
    if ipv6 and not raw_ip:
        raise PodEniAnnotationError(
            f"{POD_ENI_ANNOTATION} has no ipv6Addr: this node runs IPv6 (ENABLE_IPv6) but the branch ENI "
            f"{eni_id} has no IPv6 address; its subnet needs an IPv6 CIDR block (a dual-stack subnet)"
        )
    try:
        ip, subnet = ip_address(raw_ip), ip_network(raw_subnet, strict=False)
    except ValueError as exc:
        raise PodEniAnnotationError(f"{POD_ENI_ANNOTATION}: {exc}") from None
    for key, value in ((ip_key, ip), (subnet_key, subnet)):
        if value.version != version:
            raise PodEniAnnotationError(
                f"{POD_ENI_ANNOTATION}: {key} {value} is not IPv{version}, the node's family"
            )
    if ip not in subnet:  # type: ignore[operator]  # same family, checked above
        raise PodEniAnnotationError(f"{POD_ENI_ANNOTATION}: {ip_key} {ip} is not in {subnet_key} {subnet}")
    return BranchEni(eni_id=eni_id, mac=mac, ip=ip, vlan_id=vlan, subnet=subnet)


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    return value.strip() if isinstance(value, str) else ""


def _hex(part: str) -> bool:
    try:
        int(part, 16)
    except ValueError:
        return False
    return True
