"""egress-cni's ADD in the shim: the answer is in its ``prevResult`` already.

ipamd renders ``10-aws.conflist`` and so knows egress-cni follows aws-cni: when egress is on in its settings
it wires the pod's egress (a second veth, ``v4if0`` or ``v6if0``) within aws-cni's ADD and lists the two
interfaces in aws-cni's result, after aws-cni's own. egress-cni's ADD then finds them in its ``prevResult``
and prints that, with no call to ipamd: what egress-cni itself adds to a pod's ADD is its process.
Anything else (the entry says ``enabled: "false"``, the interfaces are not there because aws-cni's ADD could
not wire them or the config version's results have no interfaces) goes to ipamd, which wires, unwires or
reports the error as egress-cni's own call. DEL, CHECK and GC always go to ipamd (the DEL queue covers ipamd
being down).

The entry's shape is checked here for every command (ipamd adds the address parsing; this module imports
no ``ipaddress``), so a malformed entry is the same spec error whichever side answers.
"""

from __future__ import annotations

from vpccni.cniplugin import versions
from vpccni.cniplugin.errors import CNIError, ErrorCode

PLUGIN_TYPE = "egress-cni"
V4_IFNAME = "v4if0"  # the pod end of IPv4 egress (an IPv6 pod's), as upstream names it
V6_IFNAME = "v6if0"  # of IPv6 egress (ENABLE_V6_EGRESS, an IPv4 pod's)


def _error(msg: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"egress-cni configuration: {msg}")


def is_egress(raw: object) -> bool:
    return isinstance(raw, dict) and raw.get("type") == PLUGIN_TYPE


def enabled(raw: dict[str, object]) -> bool:
    """``enabled`` as upstream reads it: ``true`` (or ``"true"``, any case) turns it on; absent is off."""
    value = raw.get("enabled", "false")
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def subnet_text(raw: dict[str, object]) -> str | None:
    """``ipam.ranges[0][0].subnet`` (None when there are no ranges); code 7 when ``ipam`` is malformed."""
    ipam = raw.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise _error("ipam must be an object")
    ranges = ipam.get("ranges") or []
    try:
        subnet = ranges[0][0]["subnet"]
    except (IndexError, KeyError, TypeError):
        if ranges:
            raise _error('ipam.ranges must be [[{"subnet": "<cidr>"}]]') from None
        return None
    if not isinstance(subnet, str) or subnet.count("/") != 1:
        raise _error(f"ipam subnet {subnet!r} is not a CIDR")
    return subnet


def check_entry(raw: dict[str, object]) -> None:
    """The entry's shape (code 7): ``ipam``, ``nodeIP``, ``mtu`` and ``prevResult`` of the right kinds."""
    subnet_text(raw)
    node_ip = raw.get("nodeIP")
    if node_ip and not isinstance(node_ip, str):
        raise _error(f"nodeIP {node_ip!r} is not an IP address")
    mtu = raw.get("mtu")
    if mtu and not ((isinstance(mtu, int) and not isinstance(mtu, bool)) or str(mtu).strip().isdigit()):
        raise _error(f"mtu {mtu!r} is not a number")
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _error("prevResult must be a JSON object")


def pod_ifname(raw: dict[str, object]) -> str:
    """The pod end's name: IPv6 egress when ``nodeIP`` is an IPv6 address (upstream's rule), else the
    range's family decides."""
    family_of = str(raw.get("nodeIP") or subnet_text(raw) or "")
    return V6_IFNAME if ":" in family_of else V4_IFNAME


def wired_result(raw: dict[str, object], cni_version: str) -> dict[str, object] | None:
    """egress-cni's ADD result when ipamd wired the egress in aws-cni's ADD: ``prevResult`` as it is (it
    lists the egress interfaces, and it is in the config's version, ``cni_version``, which the spec has a
    chained plugin answer in). None when ipamd must be asked. ``check_entry`` first."""
    prev = raw.get("prevResult")
    if not enabled(raw) or not isinstance(prev, dict):
        return None
    try:
        if versions.canonical(prev.get("cniVersion")) != cni_version:
            return None  # ipamd converts it
    except CNIError:
        return None
    interfaces = prev.get("interfaces")
    if not isinstance(interfaces, list):
        return None
    name = pod_ifname(raw)
    for interface in interfaces:
        if isinstance(interface, dict) and interface.get("name") == name and interface.get("sandbox"):
            return prev
    return None
