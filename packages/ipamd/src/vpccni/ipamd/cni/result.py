"""The ADD result in upstream's shape (docs/design/upstream-contract.md §3), and reading it back.

Upstream's quirks are kept because an upstream plugin DELs our pods after a downgrade (and we DEL theirs
after an upgrade) using only ``prevResult``:

- ``interfaces[1]`` is the container interface with ``mac`` = the route-table id (not a MAC);
- ``interfaces[2]`` is a fake ``dummy<hash>`` interface with ``mac`` = VLAN id (0: not a branch ENI) and
  ``sandbox`` = the ENI device number;
- ``ips`` holds the pod address as /32 with ``interface`` = 1 and no gateway (regular pods).

The one addition: the host veth entry carries its real ``mac`` (upstream leaves it empty). The spec asks
for hardware addresses where they exist, and no upstream reader looks at that entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from vpccni.networkutils.names import host_veth_name

DUMMY_PREFIX = "dummy"
CONTAINER_INTERFACE_INDEX = 1


def dummy_interface_name(namespace: str, pod: str) -> str:
    """``dummy`` + the same 11 hex digits as the host veth name."""
    return DUMMY_PREFIX + host_veth_name(namespace, pod)[len("eni") :]


def build_result(
    *, host_veth: str, host_mac: str, ifname: str, netns_path: str, ipv4: IPv4Address, route_table: int,
    device_number: int, pod_namespace: str, pod_name: str, vlan_id: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The current-version (1.1.0) result; ``vpccni.cniplugin.results.convert`` writes older shapes."""
    return {
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": host_veth, "mac": host_mac},
            {"name": ifname, "sandbox": netns_path, "mac": str(route_table)},
            {
                "name": dummy_interface_name(pod_namespace, pod_name),
                "mac": str(vlan_id),
                "sandbox": str(device_number),
            },
        ],
        "ips": [{"address": str(IPv4Interface(f"{ipv4}/32")), "interface": CONTAINER_INTERFACE_INDEX}],
        "dns": {},
    }


@dataclass(frozen=True, kw_only=True)
class PreviousAttachment:
    """What a ``prevResult`` (ours or upstream's) says about the pod: enough to tear it down."""

    ipv4: IPv4Address
    route_table: int
    vlan_id: int = 0
    host_veth: str = ""  # the host-side interface (no sandbox), when the result names one


def read_prev_result(current: dict[str, Any], ifname: str) -> PreviousAttachment | None:
    """The pod's IPv4 and route table from a ``prevResult`` in the current shape; None if it lacks them."""
    interfaces = [i for i in current.get("interfaces") or [] if isinstance(i, dict)]
    container = next((i for i in interfaces if i.get("name") == ifname), None)
    dummy = next((i for i in interfaces if str(i.get("name", "")).startswith(DUMMY_PREFIX)), None)
    host = next((i for i in interfaces if not i.get("sandbox") and i is not dummy), None)
    ipv4 = None
    for ip in current.get("ips") or []:
        try:
            address = IPv4Interface(ip["address"]).ip
        except (KeyError, TypeError, ValueError):
            continue
        ipv4 = address
        break
    if ipv4 is None or container is None:
        return None
    try:
        table = int(container.get("mac", ""))
        vlan = int(dummy.get("mac", "0")) if dummy else 0
    except (TypeError, ValueError):
        return None
    host_veth = str(host.get("name") or "") if host else ""
    return PreviousAttachment(ipv4=ipv4, route_table=table, vlan_id=vlan, host_veth=host_veth)
