"""The PolicyEndpoint (`networking.k8s.aws/v1alpha1`) as frozen values: what the controller writes and the
node agent enforces. Field meanings follow upstream's CRD; JSON conversion is in `policyendpoint`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from vpccni.netpol.selectors import LabelSelector

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address


class Protocol(enum.Enum):
    """The transport protocols NetworkPolicy ports name; the value is the IP protocol number."""

    TCP = 6
    UDP = 17
    SCTP = 132

    @property
    def nft(self) -> str:
        return self.name.lower()


class Direction(enum.Enum):
    """`podIsolation` values (NetworkPolicy `policyTypes`)."""

    INGRESS = "Ingress"
    EGRESS = "Egress"


@dataclass(frozen=True, kw_only=True, order=True)
class Port:
    """One entry of an endpoint's `ports`: a protocol, and a port or range (`port` None means every port)."""

    protocol: Protocol = Protocol.TCP
    port: int | None = None
    end_port: int | None = None

    @property
    def first(self) -> int:
        return 0 if self.port is None else self.port

    @property
    def last(self) -> int:
        if self.port is None:
            return 65535
        return self.end_port if self.end_port is not None else self.port

    def describe(self) -> str:
        if self.port is None:
            return f"{self.protocol.name}/*"
        span = f"{self.port}-{self.last}" if self.last != self.port else str(self.port)
        return f"{self.protocol.name}/{span}"


@dataclass(frozen=True, kw_only=True)
class EndpointInfo:
    """One resolved peer of a rule: a CIDR (a pod's /32 or an ipBlock) minus `excepts`, on `ports`.

    No ports means every protocol and port (a NetworkPolicy rule without `ports`)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PodEndpoint:
    """A pod the policy's podSelector selects (upstream: `podSelectorEndpoints`)."""

    name: str
    namespace: str
    pod_ip: IPAddress
    host_ip: IPAddress | None = None


@dataclass(frozen=True, kw_only=True)
class PolicyRef:
    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, kw_only=True)
class PolicyEndpoint:
    """One PolicyEndpoint object; a large policy is split across several with the same `policy_ref`."""

    name: str
    namespace: str
    policy_ref: PolicyRef
    pod_selector: LabelSelector | None = None  # None selects every pod of the namespace
    pod_isolation: tuple[Direction, ...] = ()
    pod_selector_endpoints: tuple[PodEndpoint, ...] = ()
    ingress: tuple[EndpointInfo, ...] = ()
    egress: tuple[EndpointInfo, ...] = ()
    resource_version: str = ""
    # Entries the parser could not read: the agent enforces the rest and reports these.
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def isolates(self, direction: Direction) -> bool:
        """Whether a pod this object selects is isolated in `direction`. Without `podIsolation` (older
        controllers) a direction is isolated when the object has rules for it, as upstream's agent has it."""
        if self.pod_isolation:
            return direction in self.pod_isolation
        return bool(self.ingress if direction is Direction.INGRESS else self.egress)

    def rules(self, direction: Direction) -> tuple[EndpointInfo, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress
