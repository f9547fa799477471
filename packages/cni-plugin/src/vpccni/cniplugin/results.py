"""CNI results converted between spec versions.

The "current" form is the 1.1.0 result. ``convert`` writes it in the shape a requested version expects:
1.0.0 drops the 1.1.0-only keys; 0.3.0-0.4.0 also add ``ips[].version``; 0.1.0/0.2.0 use ``ip4``/``ip6``.
``to_current`` reads any supported version back (a ``prevResult``), so ipamd works on one shape only.
"""

from __future__ import annotations

import copy
from typing import Any

from vpccni.cniplugin import versions
from vpccni.cniplugin.errors import CNIError, ErrorCode

# Keys that appeared in 1.1.0; the Go library never writes them for older versions.
_INTERFACE_KEYS_1_1 = ("mtu", "socketPath", "pciID")
_ROUTE_KEYS_1_1 = ("mtu", "advmss", "priority", "table", "scope")


def _is_v6(address: str) -> bool:
    return ":" in address


def _strip_1_1(result: dict[str, Any]) -> None:
    for iface in result.get("interfaces") or []:
        if isinstance(iface, dict):
            for key in _INTERFACE_KEYS_1_1:
                iface.pop(key, None)
    for route in result.get("routes") or []:
        if isinstance(route, dict):
            for key in _ROUTE_KEYS_1_1:
                route.pop(key, None)


def _to_legacy(current: dict[str, Any], version: str) -> dict[str, Any]:
    """0.1.0 / 0.2.0: the first IPv4 and first IPv6 address, routes split by family."""
    out: dict[str, Any] = {"cniVersion": version}
    ips = [ip for ip in current.get("ips") or [] if isinstance(ip, dict)]
    routes = [r for r in current.get("routes") or [] if isinstance(r, dict)]
    for family, v6 in (("ip4", False), ("ip6", True)):
        ip = next((i for i in ips if _is_v6(str(i.get("address", ""))) == v6), None)
        if ip is None:
            continue
        entry: dict[str, Any] = {"ip": ip["address"]}
        if ip.get("gateway"):
            entry["gateway"] = ip["gateway"]
        family_routes = [
            {k: r[k] for k in ("dst", "gw") if k in r} for r in routes if _is_v6(str(r.get("dst", ""))) == v6
        ]
        if family_routes:
            entry["routes"] = family_routes
        out[family] = entry
    if "ip4" not in out and "ip6" not in out:
        raise CNIError(ErrorCode.INTERNAL, f"cannot write a {version} result: it has no IP address")
    out["dns"] = copy.deepcopy(current.get("dns") or {})
    return out


def convert(current: dict[str, Any], version: str) -> dict[str, Any]:
    """The current (1.1.0) ``result`` written for ``version`` (one of ``SUPPORTED_VERSIONS``)."""
    version = versions.canonical(version)
    if version not in versions.SUPPORTED_VERSIONS:
        raise CNIError(ErrorCode.INCOMPATIBLE_CNI_VERSION, f"cannot write a result for CNI version {version}")
    if versions.parse_version(version) < (0, 3, 0):
        return _to_legacy(current, version)
    out = copy.deepcopy(current)
    out["cniVersion"] = version
    out.setdefault("dns", {})
    if version != versions.LATEST:
        _strip_1_1(out)
    for ip in out.get("ips") or []:
        if isinstance(ip, dict):
            ip.pop("version", None)
            if versions.has_ip_version(version):
                ip["version"] = "6" if _is_v6(str(ip.get("address", ""))) else "4"
    return out


def to_current(result: dict[str, Any], version: object) -> dict[str, Any]:
    """A result of any supported version (e.g. a ``prevResult``) in the current shape; code 6 if malformed."""
    version = versions.canonical(version)
    if not isinstance(result, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE, "prevResult must be a JSON object")
    if versions.parse_version(version) < (0, 3, 0):
        ips = []
        routes: list[Any] = []
        for family in ("ip4", "ip6"):
            entry = result.get(family)
            if entry is None:
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("ip"), str):
                raise CNIError(ErrorCode.DECODING_FAILURE, f"prevResult.{family} must be an object with 'ip'")
            ip = {"address": entry["ip"]}
            if isinstance(entry.get("gateway"), str):
                ip["gateway"] = entry["gateway"]
            ips.append(ip)
            routes.extend(r for r in entry.get("routes") or [] if isinstance(r, dict))
        out: dict[str, Any] = {"cniVersion": versions.LATEST, "ips": ips}
        if routes:
            out["routes"] = routes
        out["dns"] = copy.deepcopy(result.get("dns") or {})
        return out
    out = copy.deepcopy(result)
    for key in ("interfaces", "ips", "routes"):
        if key in out and not isinstance(out[key], list):
            raise CNIError(ErrorCode.DECODING_FAILURE, f"prevResult.{key} must be a list")
    for ip in out.get("ips") or []:
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            raise CNIError(ErrorCode.DECODING_FAILURE, "prevResult.ips[] entries need a string 'address'")
        ip.pop("version", None)
    out["cniVersion"] = versions.LATEST
    return out
