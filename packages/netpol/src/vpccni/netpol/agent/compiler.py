"""Turn the resolved peers of one pod direction into the elements of nftables interval sets.

The kernel's concatenated interval sets (`ipv4_addr . inet_proto . inet_service`, the "pipapo" backend)
find a packet's element in time independent of how many elements there are, but refuse overlapping
elements. NetworkPolicy rules overlap freely (a /16 on port 80 next to a pod's /32 on any TCP port), so this
module cuts the allowed space into disjoint boxes first:

- `all_traffic`: addresses allowed for every protocol and port (rules without `ports`), merged;
- `ports`: (address span, protocol, port span) boxes; per protocol a sweep over the address boundaries
  keeps the set of port spans active in each elementary address interval, merges them, and joins adjacent
  address intervals that allow the same ports.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from vpccni.netpol.agent.spans import Span, merge, network_span, subtract
from vpccni.netpol.model import EndpointInfo, Protocol

PortBox = tuple[Span, Protocol, Span]


@dataclass(frozen=True, kw_only=True)
class FamilySets:
    """The disjoint elements for one address family."""

    all_traffic: tuple[Span, ...] = ()
    ports: tuple[PortBox, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.all_traffic and not self.ports


@dataclass(frozen=True, kw_only=True)
class CompiledRules:
    """What one direction of one pod allows, ready to become set elements."""

    v4: FamilySets = FamilySets()
    v6: FamilySets = FamilySets()

    @property
    def allows_nothing(self) -> bool:
        return self.v4.empty and self.v6.empty

    def family(self, version: int) -> FamilySets:
        return self.v4 if version == 4 else self.v6

    def admits(self, version: int, address: int, protocol: Protocol | None, port: int | None) -> bool:
        """What the kernel's lookups in these sets answer for a packet (a linear scan: for checks only)."""
        sets = self.family(version)
        if any(address in s for s in sets.all_traffic):
            return True
        if protocol is None or port is None:
            return False
        return any(address in a and proto is protocol and port in p for a, proto, p in sets.ports)


def endpoint_spans(info: EndpointInfo) -> list[Span]:
    """The addresses of `info`: its CIDR minus its excepts."""
    holes = [network_span(e) for e in info.excepts if e.version == info.cidr.version]
    return subtract([network_span(info.cidr)], holes)


def _port_boxes(entries: list[tuple[Span, Span]], protocol: Protocol) -> list[PortBox]:
    """Disjoint boxes covering exactly the union of (address span x port span) `entries`."""
    starts: dict[int, list[Span]] = collections.defaultdict(list)
    ends: dict[int, list[Span]] = collections.defaultdict(list)
    for addr, ports in entries:
        starts[addr.lo].append(ports)
        ends[addr.hi + 1].append(ports)
    points = sorted(set(starts) | set(ends))
    active: collections.Counter[Span] = collections.Counter()
    segments: list[tuple[Span, tuple[Span, ...]]] = []
    for i, point in enumerate(points[:-1]):
        for ports in ends.get(point, ()):
            active[ports] -= 1
            if not active[ports]:
                del active[ports]
        for ports in starts.get(point, ()):
            active[ports] += 1
        if not active:
            continue
        seg = Span(point, points[i + 1] - 1)
        allowed = tuple(merge(active))
        if segments and segments[-1][1] == allowed and segments[-1][0].hi + 1 == seg.lo:
            segments[-1] = (Span(segments[-1][0].lo, seg.hi), allowed)
        else:
            segments.append((seg, allowed))
    return [(addr, protocol, ports) for addr, allowed in segments for ports in allowed]


def _family(infos: Iterable[EndpointInfo]) -> FamilySets:
    everything: list[Span] = []
    by_protocol: dict[Protocol, list[tuple[Span, Span]]] = collections.defaultdict(list)
    for info in infos:
        spans = endpoint_spans(info)
        if not info.ports:
            everything.extend(spans)
            continue
        for port in info.ports:
            port_span = Span(port.first, port.last)
            by_protocol[port.protocol].extend((s, port_span) for s in spans)
    boxes: list[PortBox] = []
    for protocol in sorted(by_protocol, key=lambda p: p.value):
        boxes.extend(_port_boxes(by_protocol[protocol], protocol))
    return FamilySets(all_traffic=tuple(merge(everything)), ports=tuple(boxes))


def compile_rules(infos: Iterable[EndpointInfo]) -> CompiledRules:
    """The union of what `infos` allow, as disjoint set elements per address family."""
    items = list(infos)
    return CompiledRules(
        v4=_family(i for i in items if i.cidr.version == 4),
        v6=_family(i for i in items if i.cidr.version == 6),
    )
