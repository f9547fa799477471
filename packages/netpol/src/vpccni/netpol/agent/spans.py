"""Inclusive integer intervals of addresses and ports, and the arithmetic the rule compiler needs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from vpccni.netpol.model import IPNetwork


@dataclass(frozen=True, order=True)
class Span:
    """`lo` to `hi`, both included."""

    lo: int
    hi: int

    def __contains__(self, value: int) -> bool:
        return self.lo <= value <= self.hi


def network_span(net: IPNetwork) -> Span:
    return Span(int(net.network_address), int(net.broadcast_address))


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, with overlapping and adjacent spans joined."""
    out: list[Span] = []
    for span in sorted(spans):
        if out and span.lo <= out[-1].hi + 1:
            if span.hi > out[-1].hi:
                out[-1] = Span(out[-1].lo, span.hi)
        else:
            out.append(span)
    return out


def subtract(spans: Iterable[Span], holes: Iterable[Span]) -> list[Span]:
    """`spans` minus every address in `holes` (both merged first)."""
    result: list[Span] = []
    cut = merge(holes)
    for span in merge(spans):
        lo = span.lo
        for hole in cut:
            if hole.hi < lo or hole.lo > span.hi:
                continue
            if hole.lo > lo:
                result.append(Span(lo, hole.lo - 1))
            lo = hole.hi + 1
            if lo > span.hi:
                break
        if lo <= span.hi:
            result.append(Span(lo, span.hi))
    return result


def address_text(span: Span, version: int) -> str:
    """nft syntax for an address span: an address, a prefix when the span is one, else `a-b`."""
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    first, last = cls(span.lo), cls(span.hi)
    if span.lo == span.hi:
        return str(first)
    nets = list(ipaddress.summarize_address_range(first, last))  # type: ignore[arg-type]
    return str(nets[0]) if len(nets) == 1 else f"{first}-{last}"


def port_text(span: Span) -> str:
    return str(span.lo) if span.lo == span.hi else f"{span.lo}-{span.hi}"
