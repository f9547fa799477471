"""The ADD result in upstream's shape (docs/design/upstream-contract.md §3), and reading it back.

Upstream's quirks are kept because an upstream plugin DELs our pods after a downgrade (and we DEL theirs
after an upgrade) using only ``prevResult``:

- ``interfaces[1]`` is the container interface with ``mac`` = the route-table id (not a MAC);
- ``interfaces[2]`` is a fake ``dummy<hash>`` interface with ``mac`` = VLAN id (0: not a branch ENI) and
  ``sandbox`` = the ENI device number;
- ``ips`` holds the pod address as /32 (/128 for IPv6) with ``interface`` = 1 and no gateway (regular pods);
- a multi-NIC pod lists a host veth and container end per network card (``eth0``, ``mNicIf1``, ...), each
  container end with its own table in ``mac`` and its own address; the dummy comes last (upstream's DEL
  without ipamd counts the interfaces as (entries - 1) / 2).

A branch-ENI pod's result is upstream's too: the VLAN id in the dummy interface's ``mac`` (no ``sandbox``),
route table and device number -1, and the branch subnet's gateway in ``ips``.

The one addition: the host veth entry carries its real ``mac`` (upstream leaves it empty). The spec asks
for hardware addresses where they exist, and no upstream reader looks at that entry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_interface
from typing import Any

from vpccni.cniplugin import results
from vpccni.cniplugin.errors import CNIError
from vpccni.networkutils.model import IPAddress, host_network
from vpccni.networkutils.names import host_veth_name, multi_nic_ifname

log = logging.getLogger(__name__)

DUMMY_PREFIX = "dummy"


def dummy_interface_name(namespace: str, pod: str) -> str:
    """``dummy`` + the same 11 hex digits as the host veth name."""
    return DUMMY_PREFIX + host_veth_name(namespace, pod)[len("eni") :]


@dataclass(frozen=True, kw_only=True)
class ResultInterface:
    """One pod interface as the result lists it: its host veth, then the container end."""

    host_veth: str
    host_mac: str
    ifname: str
    ip: IPAddress
    route_table: int


def build_result(
    *, host_veth: str, host_mac: str, ifname: str, netns_path: str, ip: IPAddress, route_table: int,
    device_number: int, pod_namespace: str, pod_name: str, vlan_id: int = 0,
    gateway: IPAddress | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The current-version (1.1.0) result; ``vpccni.cniplugin.results.convert`` writes older shapes."""
    interface = ResultInterface(
        host_veth=host_veth, host_mac=host_mac, ifname=ifname, ip=ip, route_table=route_table
    )
    return build_interfaces_result(
        [interface], netns_path=netns_path, device_number=device_number, pod_namespace=pod_namespace,
        pod_name=pod_name, vlan_id=vlan_id, gateway=gateway,
    )  # fmt: skip


def build_interfaces_result(
    interfaces: Sequence[ResultInterface], *, netns_path: str, device_number: int, pod_namespace: str,
    pod_name: str, vlan_id: int = 0, gateway: IPAddress | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Upstream's shape for any number of interfaces (a multi-NIC pod: one per network card): each host
    veth followed by its container end, each address pointing at its container end, the ``dummy`` last
    (``device_number`` is the first interface's ENI's, as upstream's; a branch-ENI pod's dummy has no
    ``sandbox`` and its address the branch subnet's ``gateway``)."""
    listed: list[dict[str, Any]] = []
    ips: list[dict[str, Any]] = []
    for item in interfaces:
        listed.append({"name": item.host_veth, "mac": item.host_mac})
        listed.append({"name": item.ifname, "sandbox": netns_path, "mac": str(item.route_table)})
        entry: dict[str, Any] = {
            "address": str(ip_interface(host_network(item.ip))),
            "interface": len(listed) - 1,
        }
        if gateway is not None:
            entry["gateway"] = str(gateway)
        ips.append(entry)
    dummy = {"name": dummy_interface_name(pod_namespace, pod_name), "mac": str(vlan_id)}
    if not vlan_id:
        dummy["sandbox"] = str(device_number)
    listed.append(dummy)
    return {"cniVersion": "1.1.0", "interfaces": listed, "ips": ips, "dns": {}}


@dataclass(frozen=True, kw_only=True)
class PreviousAttachment:
    """What a ``prevResult`` (ours or upstream's) says about the pod: enough to tear it down."""

    ip: IPAddress
    route_table: int
    vlan_id: int = 0
    host_veth: str = ""  # the host-side interface (no sandbox), when the result names one


def read_prev_result(current: dict[str, Any], ifname: str) -> PreviousAttachment | None:
    """The pod's address and route table from a ``prevResult`` in the current shape; None if it lacks them."""
    interfaces = [i for i in current.get("interfaces") or [] if isinstance(i, dict)]
    container = next((i for i in interfaces if i.get("name") == ifname), None)
    dummy = next((i for i in interfaces if str(i.get("name", "")).startswith(DUMMY_PREFIX)), None)
    host = next((i for i in interfaces if not i.get("sandbox") and i is not dummy), None)
    address: IPAddress | None = None
    for ip in current.get("ips") or []:
        try:
            address = ip_interface(ip["address"]).ip
        except (KeyError, TypeError, ValueError):
            continue
        break
    if address is None or container is None:
        return None
    try:
        table = int(container.get("mac", ""))
        vlan = int(dummy.get("mac", "0")) if dummy else 0
    except (TypeError, ValueError):
        return None
    host_veth = str(host.get("name") or "") if host else ""
    return PreviousAttachment(ip=address, route_table=table, vlan_id=vlan, host_veth=host_veth)


def read_prev_interfaces(current: dict[str, Any], ifname: str) -> tuple[PreviousAttachment, ...]:
    """Every pod interface a ``prevResult`` lists, in order: ``ifname``, then a multi-NIC pod's
    ``mNicIf1``, ``mNicIf2``... each with the address pointing at it and the host veth listed before it.
    Stops at the first interface it cannot read; empty when even the first is missing."""
    listed = [i if isinstance(i, dict) else {} for i in current.get("interfaces") or []]
    positions = {str(i.get("name", "")): n for n, i in enumerate(listed) if i.get("sandbox")}
    addresses: dict[int, IPAddress] = {}
    for ip in current.get("ips") or []:
        try:
            addresses.setdefault(int(ip["interface"]), ip_interface(ip["address"]).ip)
        except (KeyError, TypeError, ValueError):
            continue
    found: list[PreviousAttachment] = []
    for index in range(len(listed)):
        at = positions.get(multi_nic_ifname(ifname, index))
        if at is None or at not in addresses:
            break
        try:
            table = int(listed[at].get("mac", ""))
        except (TypeError, ValueError):
            break
        host = listed[at - 1] if at > 0 and not listed[at - 1].get("sandbox") else {}
        found.append(
            PreviousAttachment(ip=addresses[at], route_table=table, host_veth=str(host.get("name") or ""))
        )
    return tuple(found)


def prev_result_for_del(
    prev_result: dict[str, Any] | None, version: str, ifname: str, label: str
) -> PreviousAttachment | None:
    """What a DEL's `prevResult` says about the attachment; None when there is none or it is unreadable (a DEL
    must go on regardless: it is logged)."""
    if not prev_result:
        return None
    try:
        return read_prev_result(results.to_current(prev_result, version), ifname)
    except CNIError as exc:
        log.warning("DEL %s: unreadable prevResult ignored: %s", label, exc.msg)
        return None
