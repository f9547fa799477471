"""The rule compiler: disjoint set elements that admit exactly what the resolved peers allow."""

from __future__ import annotations

import ipaddress
import random

import pytest
from vpccni.netpol.agent.compiler import compile_rules
from vpccni.netpol.agent.effective import endpoint_allows
from vpccni.netpol.agent.spans import Span, address_text, merge, subtract
from vpccni.netpol.model import EndpointInfo, Port, Protocol


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_merge_joins_overlapping_and_adjacent_spans() -> None:
    assert merge([Span(5, 9), Span(1, 3), Span(4, 4), Span(20, 30), Span(25, 26)]) == [
        Span(1, 9),
        Span(20, 30),
    ]


def test_subtract_cuts_holes_anywhere() -> None:
    assert subtract([Span(0, 99)], [Span(0, 9), Span(50, 59), Span(95, 120)]) == [Span(10, 49), Span(60, 94)]
    assert subtract([Span(10, 20)], [Span(0, 100)]) == []
    assert subtract([Span(10, 20)], []) == [Span(10, 20)]


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (Span(0x0A000000, 0x0A0000FF), "10.0.0.0/24"),
        (Span(0x0A000005, 0x0A000005), "10.0.0.5"),
        (Span(0x0A000001, 0x0A000005), "10.0.0.1-10.0.0.5"),
    ],
)
def test_address_text_prefers_prefixes(span: Span, text: str) -> None:
    assert address_text(span, 4) == text


def test_a_rule_without_ports_allows_every_protocol() -> None:
    compiled = compile_rules([EndpointInfo(cidr=net("10.0.0.0/24"), excepts=(net("10.0.0.128/25"),))])
    assert [address_text(s, 4) for s in compiled.v4.all_traffic] == ["10.0.0.0/25"]
    assert compiled.v4.ports == () and compiled.v6.empty


def test_overlapping_rules_become_disjoint_boxes() -> None:
    compiled = compile_rules(
        [
            EndpointInfo(cidr=net("10.0.0.0/8"), ports=(Port(protocol=Protocol.TCP, port=80),)),
            EndpointInfo(cidr=net("10.0.0.5/32"), ports=(Port(protocol=Protocol.TCP, port=79, end_port=81),)),
            EndpointInfo(cidr=net("10.0.0.5/32"), ports=(Port(protocol=Protocol.UDP),)),
        ]
    )
    boxes = [(address_text(a, 4), proto.name, (p.lo, p.hi)) for a, proto, p in compiled.v4.ports]
    assert boxes == [
        ("10.0.0.0-10.0.0.4", "TCP", (80, 80)),
        ("10.0.0.5", "TCP", (79, 81)),
        ("10.0.0.6-10.255.255.255", "TCP", (80, 80)),
        ("10.0.0.5", "UDP", (0, 65535)),
    ]


def test_families_are_kept_apart() -> None:
    compiled = compile_rules([EndpointInfo(cidr=net("0.0.0.0/0")), EndpointInfo(cidr=net("::/0"))])
    assert len(compiled.v4.all_traffic) == 1 and len(compiled.v6.all_traffic) == 1


def _random_rules(rng: random.Random) -> list[EndpointInfo]:
    rules = []
    for _ in range(rng.randint(1, 12)):
        prefix = rng.choice([24, 26, 28, 30, 32])
        base = ipaddress.IPv4Address(0x0A000000 + rng.randrange(0, 256))
        cidr = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
        excepts: tuple[ipaddress.IPv4Network, ...] = ()
        if prefix < 30 and rng.random() < 0.4:
            sub = list(cidr.subnets(new_prefix=prefix + 2))
            excepts = (rng.choice(sub),)
        ports: list[Port] = []
        for _ in range(rng.choice([0, 0, 1, 2])):
            proto = rng.choice(list(Protocol))
            kind = rng.random()
            if kind < 0.2:
                ports.append(Port(protocol=proto))
            elif kind < 0.5:
                first = rng.randint(75, 85)
                ports.append(Port(protocol=proto, port=first, end_port=first + rng.randint(0, 4)))
            else:
                ports.append(Port(protocol=proto, port=rng.randint(78, 84)))
        rules.append(EndpointInfo(cidr=cidr, excepts=excepts, ports=tuple(ports)))
    return rules


@pytest.mark.parametrize("seed", range(40))
def test_compiled_sets_admit_exactly_what_the_rules_allow(seed: int) -> None:
    rng = random.Random(seed)
    rules = _random_rules(rng)
    compiled = compile_rules(rules)
    # Disjointness, which the kernel requires of interval sets.
    for proto in Protocol:
        boxes = sorted((a, p) for a, pr, p in compiled.v4.ports if pr is proto)
        for i, (a1, p1) in enumerate(boxes):
            for a2, p2 in boxes[i + 1 :]:
                assert not (a1.lo <= a2.hi and a2.lo <= a1.hi and p1.lo <= p2.hi and p2.lo <= p1.hi)
    for _ in range(400):
        addr = ipaddress.IPv4Address(0x0A000000 + rng.randrange(0, 300))
        proto = rng.choice([*Protocol, None])
        port = rng.randint(74, 90) if proto is not None else None
        want = any(endpoint_allows(r, addr, proto, port) for r in rules)
        assert compiled.admits(4, int(addr), proto, port) == want, (addr, proto, port)
