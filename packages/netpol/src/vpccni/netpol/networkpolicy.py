"""`networking.k8s.io/v1` NetworkPolicy as frozen values, with the API server's defaulting applied
(`policyTypes`, port protocols), so the controller never depends on whether a server defaulted them."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vpccni.netpol.model import Direction, IPNetwork, Protocol
from vpccni.netpol.selectors import LabelSelector

GROUP = "networking.k8s.io"
VERSION = "v1"
PLURAL = "networkpolicies"
PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


class PolicyError(ValueError):
    """A NetworkPolicy the API server would have rejected; the message names the field."""


@dataclass(frozen=True, kw_only=True, order=True)
class PolicyPort:
    protocol: Protocol = Protocol.TCP
    port: int | str | None = None  # a number, a named container port, or None for every port
    end_port: int | None = None


@dataclass(frozen=True, kw_only=True)
class IPBlock:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Peer:
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, kw_only=True)
class PolicyRule:
    """`peers` None: the rule has no `from`/`to` and matches every peer; empty `ports`: every port."""

    peers: tuple[Peer, ...] | None = None
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NetworkPolicy:
    namespace: str
    name: str
    uid: str = ""
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    policy_types: tuple[Direction, ...] = (Direction.INGRESS,)
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def rules(self, direction: Direction) -> tuple[PolicyRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    @property
    def has_namespace_peers(self) -> bool:
        """Whether a change outside the policy's namespace can change what it resolves to."""
        for rule in (*self.ingress, *self.egress):
            if rule.peers is None:
                return True  # named ports of a rule without peers resolve against every pod
            if any(p.namespace_selector is not None for p in rule.peers):
                return True
        return False


def _selector(raw: Any, where: str) -> LabelSelector:
    try:
        return LabelSelector.from_json(raw)
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _port(raw: Mapping[str, Any], where: str) -> PolicyPort:
    name = str(raw.get("protocol") or "TCP").upper()
    try:
        protocol = Protocol[name]
    except KeyError:
        raise PolicyError(f"{where}.protocol {raw.get('protocol')!r} is not TCP, UDP or SCTP") from None
    port = raw.get("port")
    end = raw.get("endPort")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if port is not None and not isinstance(port, int | str):
        raise PolicyError(f"{where}.port {port!r} is neither a number nor a port name")
    if end is not None and not (isinstance(port, int) and isinstance(end, int) and port <= end <= 65535):
        raise PolicyError(f"{where}.endPort {end!r} needs a numeric port and must be >= port and <= 65535")
    return PolicyPort(protocol=protocol, port=port, end_port=end)


def _peer(raw: Mapping[str, Any], where: str) -> Peer:
    block = raw.get("ipBlock")
    if block is not None:
        try:
            cidr = ipaddress.ip_network(str(block["cidr"]), strict=False)
            excepts = tuple(ipaddress.ip_network(str(e), strict=False) for e in block.get("except") or ())
        except (KeyError, ValueError) as exc:
            raise PolicyError(f"{where}.ipBlock: {exc}") from None
        return Peer(ip_block=IPBlock(cidr=cidr, excepts=excepts))
    pods = raw.get("podSelector")
    namespaces = raw.get("namespaceSelector")
    if pods is None and namespaces is None:
        raise PolicyError(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    return Peer(
        pod_selector=None if pods is None else _selector(pods, f"{where}.podSelector"),
        namespace_selector=None
        if namespaces is None
        else _selector(namespaces, f"{where}.namespaceSelector"),
    )


def _rules(raw: Any, direction: Direction) -> tuple[PolicyRule, ...]:
    key, peer_key = ("ingress", "from") if direction is Direction.INGRESS else ("egress", "to")
    rules = []
    for i, rule in enumerate(raw or ()):
        where = f"spec.{key}[{i}]"
        peers_raw = rule.get(peer_key)
        peers = (
            None
            if not peers_raw
            else tuple(_peer(p, f"{where}.{peer_key}[{j}]") for j, p in enumerate(peers_raw))
        )
        ports = tuple(_port(p, f"{where}.ports[{j}]") for j, p in enumerate(rule.get("ports") or ()))
        rules.append(PolicyRule(peers=peers, ports=ports))
    return tuple(rules)


def from_json(obj: Mapping[str, Any]) -> NetworkPolicy:
    """Parse one NetworkPolicy; raises PolicyError for what validation would have refused."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ingress = _rules(spec.get("ingress"), Direction.INGRESS)
    egress = _rules(spec.get("egress"), Direction.EGRESS)
    types_raw = spec.get("policyTypes")
    if types_raw:
        try:
            types = tuple(Direction(t) for t in types_raw)
        except ValueError:
            raise PolicyError(f"spec.policyTypes {types_raw!r}: each must be Ingress or Egress") from None
    else:
        # The API server's default: Ingress always, Egress when there are egress rules.
        types = (Direction.INGRESS, Direction.EGRESS) if egress else (Direction.INGRESS,)
    return NetworkPolicy(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        pod_selector=_selector(spec.get("podSelector") or {}, "spec.podSelector"),
        policy_types=types,
        ingress=ingress if Direction.INGRESS in types else (),
        egress=egress if Direction.EGRESS in types else (),
    )
