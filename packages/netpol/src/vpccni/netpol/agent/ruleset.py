"""The node's whole enforcement state as one nftables table, `inet vpccni-netpol`:

    map egress-pods  { type ifname : verdict }   host veth -> jump eg-<hash> | drop
    map ingress-pods { type ifname : verdict }
    set strict-pods  { type ifname }             pods admitted in strict mode (read back after a restart)
    chain in-<hash>  { ip saddr @in-<hash>-a4 return
                       ip saddr . meta l4proto . th dport @in-<hash>-p4 return
                       (the same for ip6) ; counter drop }
    chain pod-policy { type filter hook forward priority filter; policy accept;
                       ct state established,related accept
                       iifname vmap @egress-pods
                       oifname vmap @ingress-pods }

A packet from a pod leaves its host veth into the node (`iifname` = the pod's egress), and a packet to a pod
enters its host veth (`oifname` = the pod's ingress); both checks run on the forward hook, after kube-proxy's
DNAT, so a Service is judged by the pod it reaches. Per packet: two map lookups and at most four set lookups,
whatever the number of rules. Pods with the same compiled rules share one chain and its sets (the name is a
hash of the content). Replies of allowed connections pass on conntrack state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vpccni.netpol.agent.compiler import CompiledRules, FamilySets, compile_rules
from vpccni.netpol.agent.effective import DirectionPolicy, PodPolicy
from vpccni.netpol.agent.roundcache import RoundCache
from vpccni.netpol.agent.spans import address_text, port_text
from vpccni.netpol.model import Direction

FAMILY = "inet"
TABLE = "vpccni-netpol"
HOOK_CHAIN = "pod-policy"
INGRESS_MAP = "ingress-pods"
EGRESS_MAP = "egress-pods"
STRICT_SET = "strict-pods"
DROP = "drop"

_PREFIX = {Direction.INGRESS: "in", Direction.EGRESS: "eg"}
# Ingress matches the peer as the packet's source, egress as its destination.
_PEER = {Direction.INGRESS: "saddr", Direction.EGRESS: "daddr"}
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_L3 = {4: "ip", 6: "ip6"}


@dataclass(frozen=True, kw_only=True)
class Ruleset:
    """Everything the table holds. `ingress`/`egress` map a host veth to a chain name or `DROP`."""

    chains: Mapping[str, CompiledRules] = field(default_factory=dict)
    chain_direction: Mapping[str, Direction] = field(default_factory=dict)
    ingress: Mapping[str, str] = field(default_factory=dict)
    egress: Mapping[str, str] = field(default_factory=dict)
    strict_pods: frozenset[str] = frozenset()

    def verdict(self, direction: Direction, veth: str) -> str | None:
        return (self.ingress if direction is Direction.INGRESS else self.egress).get(veth)

    @property
    def element_count(self) -> int:
        return sum(
            len(c.family(v).all_traffic) + len(c.family(v).ports)
            for c in self.chains.values()
            for v in (4, 6)
        )


def _chain_name(direction: Direction, compiled: CompiledRules) -> str:
    digest = hashlib.sha256(repr(compiled).encode()).hexdigest()[:16]
    return f"{_PREFIX[direction]}-{digest}"


Compiled = tuple[str, CompiledRules | None]  # chain name (or DROP) and its sets


def build_ruleset(
    policies: Iterable[PodPolicy],
    *,
    strict_pods: Iterable[str] = (),
    cache: RoundCache[Compiled] | None = None,
) -> Ruleset:
    """The table for these pods' effective policies (open directions get no map entry). `cache` keeps the
    compiled sets of each direction's PolicyEndpoint versions from one call to the next."""
    chains: dict[str, CompiledRules] = {}
    chain_direction: dict[str, Direction] = {}
    maps: dict[Direction, dict[str, str]] = {Direction.INGRESS: {}, Direction.EGRESS: {}}
    cache = cache if cache is not None else RoundCache()
    for policy in policies:
        for direction in Direction:
            d = policy.direction(direction)
            if not d.isolated:
                continue

            def make(d: DirectionPolicy = d, direction: Direction = direction) -> Compiled:
                compiled = compile_rules(d.endpoints())
                return (
                    (DROP, None) if compiled.allows_nothing else (_chain_name(direction, compiled), compiled)
                )

            name, compiled = cache.get(d.key or (direction, d.endpoints()), make)
            if compiled is not None:
                chains[name] = compiled
                chain_direction[name] = direction
            for veth in policy.pod.veths:
                maps[direction][veth] = name
    return Ruleset(
        chains=chains,
        chain_direction=chain_direction,
        ingress=maps[Direction.INGRESS],
        egress=maps[Direction.EGRESS],
        strict_pods=frozenset(strict_pods),
    )


def _elements(items: list[str]) -> str:
    return f"\t\telements = {{ {', '.join(items)} }}\n" if items else ""


def _sets(name: str, version: int, sets: FamilySets) -> str:
    addr = _ADDR_TYPE[version]
    text = ""
    if sets.all_traffic:
        items = [address_text(s, version) for s in sets.all_traffic]
        text += f"\tset {name}-a{version} {{\n\t\ttype {addr}\n\t\tflags interval\n{_elements(items)}\t}}\n"
    if sets.ports:
        items = [f"{address_text(a, version)} . {proto.nft} . {port_text(p)}" for a, proto, p in sets.ports]
        text += (
            f"\tset {name}-p{version} {{\n\t\ttype {addr} . inet_proto . inet_service\n\t\tflags interval\n"
            f"{_elements(items)}\t}}\n"
        )
    return text


def _chain(name: str, direction: Direction, compiled: CompiledRules) -> str:
    peer = _PEER[direction]
    rules = ""
    for version in (4, 6):
        sets = compiled.family(version)
        l3 = _L3[version]
        if sets.all_traffic:
            rules += f"\t\t{l3} {peer} @{name}-a{version} return\n"
        if sets.ports:
            rules += f"\t\t{l3} {peer} . meta l4proto . th dport @{name}-p{version} return\n"
    return f"\tchain {name} {{\n{rules}\t\tcounter drop\n\t}}\n"


def _verdict_map(name: str, entries: Mapping[str, str]) -> str:
    items = [
        f'"{veth}" : {DROP if target == DROP else f"jump {target}"}'
        for veth, target in sorted(entries.items())
    ]
    return f"\tmap {name} {{\n\t\ttype ifname : verdict\n{_elements(items)}\t}}\n"


def render(ruleset: Ruleset) -> str:
    """The body of `table inet vpccni-netpol { ... }`, in one `nft -f` transaction with the table."""
    strict = _elements([f'"{veth}"' for veth in sorted(ruleset.strict_pods)])
    parts = [
        _verdict_map(EGRESS_MAP, ruleset.egress),
        _verdict_map(INGRESS_MAP, ruleset.ingress),
        f"\tset {STRICT_SET} {{\n\t\ttype ifname\n{strict}\t}}\n",
    ]
    for name in sorted(ruleset.chains):
        compiled = ruleset.chains[name]
        parts.append(_sets(name, 4, compiled.v4) + _sets(name, 6, compiled.v6))
        parts.append(_chain(name, ruleset.chain_direction[name], compiled))
    parts.append(
        f"\tchain {HOOK_CHAIN} {{\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        "\t\tct state established,related accept\n"
        f"\t\tiifname vmap @{EGRESS_MAP}\n"
        f"\t\toifname vmap @{INGRESS_MAP}\n"
        "\t}\n"
    )
    return "".join(parts)
