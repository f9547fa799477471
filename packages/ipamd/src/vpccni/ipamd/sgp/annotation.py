"""The `vpc.amazonaws.com/pod-eni` annotation the VPC resource controller writes on a branch-ENI pod.

A JSON list of `{eniId, ifAddress, privateIp, ipv6Addr, vlanId, subnetCidr, subnetV6Cidr}`; the first entry
is the pod's (upstream's AddNetwork reads only that one). Keys are matched case-insensitively, as Go's
encoding/json matches them (upstream's reader says `vlanID`, the controller writes `vlanId`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from vpccni.k8sapi.names import POD_ENI_ANNOTATION

MAX_VLAN_ID = 4094


class PodEniAnnotationError(ValueError):
    """The annotation is not what the VPC resource controller writes; the message names the problem."""


@dataclass(frozen=True, kw_only=True)
class BranchEni:
    eni_id: str
    mac: str
    ipv4: IPv4Address
    vlan_id: int
    subnet: IPv4Network

    @property
    def gateway(self) -> IPv4Address:
        """The branch subnet's VPC router: its first host, as upstream's GetIPv4Gateway."""
        return self.subnet.network_address + 1


def parse_pod_eni(text: str) -> BranchEni:
    """The pod's branch ENI from the annotation's value; raises PodEniAnnotationError."""
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
    try:
        ipv4 = IPv4Address(_text(first, "privateip"))
        subnet = IPv4Network(_text(first, "subnetcidr"), strict=False)
    except ValueError as exc:
        raise PodEniAnnotationError(f"{POD_ENI_ANNOTATION}: {exc}") from None
    if ipv4 not in subnet:
        raise PodEniAnnotationError(f"{POD_ENI_ANNOTATION}: privateIp {ipv4} is not in subnetCidr {subnet}")
    return BranchEni(eni_id=eni_id, mac=mac, ipv4=ipv4, vlan_id=vlan, subnet=subnet)


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    return value.strip() if isinstance(value, str) else ""


def _hex(part: str) -> bool:
    try:
        int(part, 16)
    except ValueError:
        return False
    return True
