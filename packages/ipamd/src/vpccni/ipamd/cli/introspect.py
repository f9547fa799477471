"""Read ipamd's introspection endpoint (`/v1/enis`, `/v1/pool`) and turn it into ENI and pod rows.

The address is ipamd's `INTROSPECTION_BIND_ADDRESS`: `host:port` or `unix:/path`.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_ADDRESS = "127.0.0.1:61679"
_NEVER = "0001-01-01T00:00:00Z"


class IntrospectionError(RuntimeError):
    """ipamd's introspection endpoint could not be read; the message says what to check."""


class IntrospectionNotFound(IntrospectionError):
    """ipamd does not serve the path (an older or upstream ipamd)."""


class IntrospectionSource(Protocol):
    def get_json(self, path: str) -> Any:
        """The decoded JSON body of GET `path`; raises IntrospectionError."""
        ...


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class HttpIntrospection:
    """The real adapter: HTTP GET against ipamd over TCP or a Unix socket."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout_s: float = 5.0) -> None:
        self.address = address
        self._timeout = timeout_s

    def _connection(self) -> http.client.HTTPConnection:
        if self.address.startswith("unix:"):
            return _UnixConnection(self.address[len("unix:") :], self._timeout)
        host, _, port = self.address.rpartition(":")
        return http.client.HTTPConnection(host.strip("[]") or "127.0.0.1", int(port), timeout=self._timeout)

    def get_text(self, path: str) -> str:
        conn = self._connection()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise IntrospectionError(
                f"cannot read {path} from ipamd at {self.address} ({exc}): is aws-node running on this node, "
                "and does --introspection-address (or INTROSPECTION_BIND_ADDRESS) match its setting?"
            ) from None
        finally:
            conn.close()
        if resp.status != 200:
            kind = IntrospectionNotFound if resp.status == 404 else IntrospectionError
            raise kind(f"ipamd at {self.address} answered {resp.status} for {path}: {body[:200]}")
        return body

    def get_json(self, path: str) -> Any:
        text = self.get_text(path)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise IntrospectionError(f"ipamd at {self.address} sent invalid JSON for {path}: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class EniRow:
    network_card: int
    eni_id: str
    device_number: int
    primary: bool
    route_table: int
    subnet_id: str
    cidrs: tuple[str, ...]
    total: int
    assigned: int
    excluded: bool


@dataclass(frozen=True, kw_only=True)
class PodRow:
    namespace: str
    name: str
    ip: str
    network_card: int  # a multi-NIC pod has a row per card
    eni_id: str
    device_number: int
    route_table: int
    cidr: str
    assigned_time: str
    vlan_id: int = 0  # a branch-ENI pod's VLAN (security groups for pods)


def _cards(enis_doc: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    out = []
    for card, infos in enis_doc.items():
        try:
            index = int(card)
        except ValueError:
            continue
        out.append((index, infos))
    return sorted(out, key=lambda item: item[0])


def _is_assigned(address: Mapping[str, Any]) -> bool:
    # The endpoint scrubs containerID; an assigned address still has its assignment time and pod metadata.
    return address.get("AssignedTime", _NEVER) != _NEVER


def eni_rows(enis_doc: Mapping[str, Any]) -> list[EniRow]:
    rows = []
    for card, infos in _cards(enis_doc):
        for eni in (infos.get("ENIs") or {}).values():
            cidrs = _cidrs_of(eni)
            total = assigned = 0
            for cidr in cidrs.values():
                addresses = (cidr.get("IPAddresses") or {}).values()
                assigned += sum(1 for a in addresses if _is_assigned(a))
                total += _cidr_size(cidr)
            rows.append(
                EniRow(
                    network_card=card,
                    eni_id=str(eni.get("ID", "")),
                    device_number=int(eni.get("DeviceNumber", 0)),
                    primary=bool(eni.get("IsPrimary")),
                    route_table=int(eni.get("RouteTableID", 0)),
                    subnet_id=str(eni.get("SubnetID", "")),
                    cidrs=tuple(sorted(cidrs)),
                    total=total,
                    assigned=assigned,
                    excluded=bool(eni.get("IsExcludedForPodIPs")),
                )
            )
    return sorted(rows, key=lambda r: (r.network_card, r.device_number))


def _cidrs_of(eni: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """An ENI's IPv4 CIDRs and (IPv6 mode) its IPv6 prefixes, by name."""
    return {**(eni.get("AvailableIPv4Cidrs") or {}), **(eni.get("IPv6Cidrs") or {})}


def _cidr_size(cidr: Mapping[str, Any]) -> int:
    if not cidr.get("IsPrefix"):
        return 1
    mask = str((cidr.get("Cidr") or {}).get("Mask", ""))
    try:
        raw = base64.b64decode(mask)
    except ValueError:
        raw = b""
    if not raw:  # as ipamd counts: a /28 is 16, an IPv6 /80 2^48
        return 16 if str(cidr.get("AddressFamily")) != "6" else 1 << 48
    return 1 << (8 * len(raw) - sum(bin(b).count("1") for b in raw))


def _each_address(
    enis_doc: Mapping[str, Any],
) -> list[tuple[int, Mapping[str, Any], str, Mapping[str, Any]]]:
    out = []
    for card, infos in _cards(enis_doc):
        for eni in (infos.get("ENIs") or {}).values():
            for cidr_name, cidr in _cidrs_of(eni).items():
                for address in (cidr.get("IPAddresses") or {}).values():
                    out.append((card, eni, cidr_name, address))
    return out


def pod_rows(enis_doc: Mapping[str, Any]) -> list[PodRow]:
    rows = []
    for card, eni, cidr_name, address in _each_address(enis_doc):
        if not _is_assigned(address):
            continue
        meta = address.get("IPAMMetadata") or {}
        rows.append(
            PodRow(
                namespace=str(meta.get("k8sPodNamespace", "")),
                name=str(meta.get("k8sPodName", "")),
                ip=str(address.get("Address", "")),
                network_card=card,
                eni_id=str(eni.get("ID", "")),
                device_number=int(eni.get("DeviceNumber", 0)),
                route_table=int(eni.get("RouteTableID", 0)),
                cidr=cidr_name,
                assigned_time=str(address.get("AssignedTime", "")),
            )
        )
    return sorted(rows, key=lambda r: (r.namespace, r.name, r.network_card, r.ip))


def pod_rows_from_pods(pods_doc: Any) -> list[PodRow]:
    """Rows from `/v1/pods`, which lists branch-ENI pods too."""
    rows = [
        PodRow(
            namespace=str(p.get("namespace", "")),
            name=str(p.get("name", "")),
            ip=str(p.get("ip", "")),
            network_card=int(p.get("networkCard", 0)),
            eni_id=str(p.get("eniId", "")),
            device_number=int(p.get("deviceNumber", 0)),
            route_table=int(p.get("routeTableId", 0)),
            cidr=f"{p.get('ip', '')}/32",
            assigned_time=str(p.get("assignedTime", "")),
            vlan_id=int(p.get("vlanId", 0)),
        )
        for p in pods_doc or []
        if isinstance(p, dict)
    ]
    return sorted(rows, key=lambda r: (r.namespace, r.name, r.network_card, r.ip))


def assigned_ips(enis_doc: Mapping[str, Any]) -> set[str]:
    return {row.ip for row in pod_rows(enis_doc)}
