"""A local pod's effective policy: which PolicyEndpoints select it, whether each direction is isolated, and
the union of what they allow, with where every allowance came from (for `vpccni policy`).

NetworkPolicy semantics: a pod is isolated in a direction when any policy selecting it names that direction
in `policyTypes`; then only what one of those policies allows passes. In strict mode a pod that went through
the CNI ADD and that no policy selects is denied both ways (upstream's strict mode).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from vpccni.netpol.agent.roundcache import RoundCache
from vpccni.netpol.model import Direction, EndpointInfo, IPAddress, PolicyEndpoint, PolicyRef, Protocol


class Isolation(enum.Enum):
    OPEN = "open"  # no policy isolates the pod in this direction
    POLICY = "policy"  # isolated: only the listed rules allow
    STRICT_DEFAULT = "strict-default-deny"  # strict mode, and no policy selects the pod yet


@dataclass(frozen=True, kw_only=True)
class SourcedRule:
    """One allowed peer and the PolicyEndpoint entry it came from."""

    endpoint: EndpointInfo
    policy: PolicyRef
    policy_endpoint: str
    index: int

    def origin(self, direction: Direction) -> str:
        return f"{self.policy} ({self.policy_endpoint} {direction.value.lower()}[{self.index}])"


@dataclass(frozen=True, kw_only=True)
class DirectionPolicy:
    isolation: Isolation = Isolation.OPEN
    rules: tuple[SourcedRule, ...] = ()
    # Which PolicyEndpoint versions made `rules` (a cheap key for caches; equal keys, equal rules).
    key: tuple[Hashable, ...] = field(default=(), compare=False)

    @property
    def isolated(self) -> bool:
        return self.isolation is not Isolation.OPEN

    def endpoints(self) -> tuple[EndpointInfo, ...]:
        return tuple(r.endpoint for r in self.rules)

    def decide(self, peer: IPAddress, protocol: Protocol | None, port: int | None) -> Decision:
        """Whether a new connection with `peer` passes, and the first rule that allows it. `protocol` None
        is a protocol without ports (ICMP...), which only a rule without `ports` allows."""
        if not self.isolated:
            return Decision(allowed=True, rule=None, isolation=self.isolation)
        for rule in self.rules:
            if endpoint_allows(rule.endpoint, peer, protocol, port):
                return Decision(allowed=True, rule=rule, isolation=self.isolation)
        return Decision(allowed=False, rule=None, isolation=self.isolation)


@dataclass(frozen=True, kw_only=True)
class Decision:
    allowed: bool
    rule: SourcedRule | None
    isolation: Isolation


def endpoint_allows(info: EndpointInfo, peer: IPAddress, protocol: Protocol | None, port: int | None) -> bool:
    """The reference semantics of one resolved peer (the compiled sets must agree with it)."""
    if peer.version != info.cidr.version or peer not in info.cidr:
        return False
    if any(peer in e for e in info.excepts if e.version == peer.version):
        return False
    if not info.ports:
        return True
    if protocol is None or port is None:
        return False
    return any(p.protocol is protocol and p.first <= port <= p.last for p in info.ports)


@dataclass(frozen=True, kw_only=True)
class LocalPod:
    """What the agent knows of a pod on its node."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    veth: str  # upstream's name for the pod's host veth
    ips: tuple[str, ...] = ()
    # Host interfaces the pod's addresses are routed to under another name (see `interfaces`).
    other_veths: tuple[str, ...] = ()

    @property
    def veths(self) -> tuple[str, ...]:
        return (self.veth, *self.other_veths)


@dataclass(frozen=True, kw_only=True)
class PodPolicy:
    pod: LocalPod
    policies: tuple[PolicyRef, ...]
    ingress: DirectionPolicy
    egress: DirectionPolicy

    def direction(self, direction: Direction) -> DirectionPolicy:
        return self.ingress if direction is Direction.INGRESS else self.egress


def selects(pe: PolicyEndpoint, pod: LocalPod) -> bool:
    """A PolicyEndpoint applies to the pods of its policy's namespace that its podSelector matches."""
    namespace = pe.policy_ref.namespace or pe.namespace
    if pod.namespace != namespace:
        return False
    return pe.pod_selector is None or pe.pod_selector.matches(pod.labels)


def _identity(pe: PolicyEndpoint) -> Hashable:
    # A watched object has a resourceVersion, new with every change; one made in a test may not (its
    # identity then is the object, which the cached value keeps alive).
    return (pe.namespace, pe.name, pe.resource_version) if pe.resource_version else pe


def _direction(
    selecting: list[PolicyEndpoint], direction: Direction, cache: RoundCache[DirectionPolicy] | None
) -> DirectionPolicy:
    isolating = [pe for pe in selecting if pe.isolates(direction)]
    if not isolating:
        return DirectionPolicy()
    key = (direction, *(_identity(pe) for pe in isolating))

    def make() -> DirectionPolicy:
        rules = tuple(
            SourcedRule(endpoint=info, policy=pe.policy_ref, policy_endpoint=pe.name, index=i)
            for pe in isolating
            for i, info in enumerate(pe.rules(direction))
        )
        return DirectionPolicy(isolation=Isolation.POLICY, rules=rules, key=key)

    return make() if cache is None else cache.get(key, make)


def effective_policy(
    pod: LocalPod,
    policy_endpoints: Iterable[PolicyEndpoint],
    *,
    strict: bool,
    cache: RoundCache[DirectionPolicy] | None = None,
) -> PodPolicy:
    selecting = sorted((pe for pe in policy_endpoints if selects(pe, pod)), key=lambda pe: pe.key)
    refs = tuple(sorted({pe.policy_ref for pe in selecting}, key=str))
    if not selecting and strict:
        deny = DirectionPolicy(isolation=Isolation.STRICT_DEFAULT)
        return PodPolicy(pod=pod, policies=(), ingress=deny, egress=deny)
    return PodPolicy(
        pod=pod,
        policies=refs,
        ingress=_direction(selecting, Direction.INGRESS, cache),
        egress=_direction(selecting, Direction.EGRESS, cache),
    )
