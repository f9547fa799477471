"""PolicyEndpoint JSON (upstream's `networking.k8s.aws/v1alpha1` schema) to and from `model` values.

Parsing never raises for one bad entry: the entry is left out (so it allows nothing) and named in
`problems`, and the rest of the object is still enforced.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from vpccni.netpol.model import (
    Direction,
    EndpointInfo,
    IPNetwork,
    PodEndpoint,
    PolicyEndpoint,
    PolicyRef,
    Port,
    Protocol,
)
from vpccni.netpol.selectors import LabelSelector, SelectorError

GROUP = "networking.k8s.aws"
VERSION = "v1alpha1"
PLURAL = "policyendpoints"
KIND = "PolicyEndpoint"
API_VERSION = f"{GROUP}/{VERSION}"


def parse_network(text: str) -> IPNetwork:
    """A CIDR, or a bare address as a /32 or /128 (upstream writes pod IPs without a prefix)."""
    return ipaddress.ip_network(text.strip(), strict=False)


def _port(raw: Mapping[str, Any]) -> Port:
    proto_name = str(raw.get("protocol") or "TCP").upper()
    try:
        protocol = Protocol[proto_name]
    except KeyError:
        raise ValueError(f"protocol {raw.get('protocol')!r} is not TCP, UDP or SCTP") from None
    port = raw.get("port")
    end = raw.get("endPort")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise ValueError(
            f"port {port!r} is not a number 1-65535 (named ports are resolved by the controller)"
        )
    if end is not None and (port is None or not isinstance(end, int) or not port <= end < 65536):
        raise ValueError(f"endPort {end!r} needs a port and must be >= port and <= 65535")
    return Port(protocol=protocol, port=port, end_port=end)


def _endpoint(raw: Mapping[str, Any]) -> EndpointInfo:
    cidr = parse_network(str(raw["cidr"]))
    excepts = tuple(parse_network(str(e)) for e in raw.get("except") or ())
    for e in excepts:
        if e.version != cidr.version or not e.subnet_of(cidr):  # type: ignore[arg-type]
            raise ValueError(f"except {e} is not inside {cidr}")
    return EndpointInfo(cidr=cidr, excepts=excepts, ports=tuple(_port(p) for p in raw.get("ports") or ()))


def _pod_endpoint(raw: Mapping[str, Any]) -> PodEndpoint:
    host = raw.get("hostIP")
    return PodEndpoint(
        name=str(raw["name"]),
        namespace=str(raw["namespace"]),
        pod_ip=ipaddress.ip_address(str(raw["podIP"])),
        host_ip=ipaddress.ip_address(str(host)) if host else None,
    )


def from_json(obj: Mapping[str, Any]) -> PolicyEndpoint:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    problems: list[str] = []
    namespace = str(meta.get("namespace") or "")
    ref = spec.get("policyRef") or {}
    policy_ref = PolicyRef(name=str(ref.get("name") or ""), namespace=str(ref.get("namespace") or namespace))
    selector: LabelSelector | None = None
    if spec.get("podSelector") is not None:
        try:
            selector = LabelSelector.from_json(spec["podSelector"])
        except SelectorError as exc:
            # Fail closed: a selector we cannot read isolates every pod of the namespace.
            problems.append(f"podSelector: {exc}; treated as selecting every pod of {namespace}")
    isolation = []
    for value in spec.get("podIsolation") or ():
        try:
            isolation.append(Direction(value))
        except ValueError:
            problems.append(f"podIsolation {value!r} is not Ingress or Egress")

    def entries(key: str, parse: Any) -> tuple[Any, ...]:
        out = []
        for i, raw in enumerate(spec.get(key) or ()):
            try:
                out.append(parse(raw))
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"{key}[{i}]: {exc}")
        return tuple(out)

    return PolicyEndpoint(
        name=str(meta.get("name") or ""),
        namespace=namespace,
        policy_ref=policy_ref,
        pod_selector=selector,
        pod_isolation=tuple(isolation),
        pod_selector_endpoints=entries("podSelectorEndpoints", _pod_endpoint),
        ingress=entries("ingress", _endpoint),
        egress=entries("egress", _endpoint),
        resource_version=str(meta.get("resourceVersion") or ""),
        problems=tuple(problems),
    )


def _address(net: IPNetwork) -> str:
    """Upstream writes a pod's address bare and an ipBlock as a CIDR."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def port_json(port: Port) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": port.protocol.name}
    if port.port is not None:
        out["port"] = port.port
    if port.end_port is not None:
        out["endPort"] = port.end_port
    return out


def endpoint_json(info: EndpointInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"cidr": _address(info.cidr)}
    if info.excepts:
        out["except"] = [str(e) for e in info.excepts]
    if info.ports:
        out["ports"] = [port_json(p) for p in info.ports]
    return out


def spec_json(pe: PolicyEndpoint) -> dict[str, Any]:
    """`spec` exactly as upstream's controller writes it (empty lists left out)."""
    spec: dict[str, Any] = {
        "policyRef": {"name": pe.policy_ref.name, "namespace": pe.policy_ref.namespace},
        "podSelector": (pe.pod_selector or LabelSelector()).to_json(),
    }
    if pe.pod_isolation:
        spec["podIsolation"] = [d.value for d in pe.pod_isolation]
    if pe.pod_selector_endpoints:
        spec["podSelectorEndpoints"] = [
            {
                "hostIP": "" if p.host_ip is None else str(p.host_ip),
                "podIP": str(p.pod_ip),
                "name": p.name,
                "namespace": p.namespace,
            }
            for p in pe.pod_selector_endpoints
        ]
    if pe.ingress:
        spec["ingress"] = [endpoint_json(e) for e in pe.ingress]
    if pe.egress:
        spec["egress"] = [endpoint_json(e) for e in pe.egress]
    return spec
