"""The security-group table the VPC datapath renders from EC2 state (the netns tier runs it on packets)."""

from __future__ import annotations

import ipaddress

from vpccni.testbed.datapath.secgroups import render_security
from vpccni.testbed.ec2.security import GroupRules, SecurityState, SgRule

NET = ipaddress.IPv4Network
NET6 = ipaddress.IPv6Network


def _state() -> SecurityState:
    return SecurityState(
        groups={
            "sg-web": GroupRules(
                ingress=(
                    SgRule(protocol="tcp", from_port=8080, to_port=8080, group_id="sg-app"),
                    SgRule(protocol="udp", from_port=53, to_port=60, cidr=NET("10.0.0.0/16")),
                    SgRule(protocol="icmp", from_port=8, to_port=-1, cidr=NET("0.0.0.0/0")),
                ),
                egress=(SgRule(protocol="-1", cidr=NET("0.0.0.0/0")),),
            ),
            "sg-app": GroupRules(),
        },
        eni_groups={"eni-web": ("sg-web",), "eni-app": ("sg-app",)},
        eni_addresses={
            "eni-app": (NET("10.0.1.5/32"), NET("10.0.1.16/28")),
            "eni-web": (NET("10.0.1.9/32"),),
        },
    )


def test_rules_become_return_lines_and_everything_else_is_counted_and_dropped() -> None:
    text = render_security(
        ports={"bweb": "eni-web", "xapp": "eni-app", "xnode": "eni-unknown"}, state=_state()
    )
    ingress = text[text.index("chain in_bweb") :].split("}")[0]
    assert "ip saddr @g_sg_app tcp dport 8080 return" in ingress
    assert "ip saddr 10.0.0.0/16 udp dport 53-60 return" in ingress
    # 0.0.0.0/0: every IPv4 packet, and IPv4's ICMP only
    assert "meta nfproto ipv4 meta l4proto icmp icmp type 8 return" in ingress
    assert ingress.strip().endswith("counter drop")
    egress = text[text.index("chain out_bweb") :].split("}")[0]
    assert "\n    meta nfproto ipv4 return\n" in egress  # all IPv4 traffic anywhere, no IPv6
    # a group without rules admits and sends nothing
    assert text[text.index("chain in_xapp") :].split("}")[0].split("{")[1].split() == ["counter", "drop"]
    # the referenced group's members: every address of its ENIs (it has no IPv6: an empty IPv6 set)
    assert (
        "set g_sg_app {\n    type ipv4_addr; flags interval;\n    elements = { 10.0.1.5/32, 10.0.1.16/28 }"
        in text
    )
    assert "set g6_sg_app {\n    type ipv6_addr; flags interval;\n  }" in text
    assert "ip6 saddr @g6_sg_app tcp dport 8080 return" in ingress  # a group reference: both families
    # an ENI EC2 does not list is not filtered; replies of tracked connections always pass
    assert "xnode" not in text
    assert text.index("ct state established,related accept") < text.index("iifname vmap")


def test_nothing_filtered_without_listed_enis() -> None:
    text = render_security(ports={"x1": "eni-1"}, state=SecurityState())
    assert "vmap" not in text and "chain forward" in text


def _dual_stack_state() -> SecurityState:
    return SecurityState(
        groups={
            "sg-db": GroupRules(
                ingress=(
                    SgRule(protocol="tcp", from_port=5432, to_port=5432, cidr=NET6("2001:db8:0:1ff::10/128")),
                    SgRule(protocol="icmpv6", from_port=128, to_port=-1, group_id="sg-app"),
                    SgRule(protocol="icmp", from_port=-1, to_port=-1, group_id="sg-app"),
                    SgRule(protocol="udp", from_port=53, to_port=53, cidr=NET6("::/0")),
                ),
                egress=(
                    SgRule(protocol="-1", cidr=NET("0.0.0.0/0")),
                    SgRule(protocol="-1", cidr=NET6("::/0")),
                ),
            ),
            "sg-app": GroupRules(egress=(SgRule(protocol="icmpv6", cidr=NET6("2001:db8::/56")),)),
        },
        eni_groups={"eni-db": ("sg-db",), "eni-app": ("sg-app",)},
        eni_addresses={
            "eni-app": (NET("10.0.1.5/32"), NET6("2001:db8:0:100::4/128"), NET6("2001:db8:0:100:2::/80")),
            "eni-db": (NET("10.0.1.9/32"), NET6("2001:db8:0:100::9/128")),
        },
    )


def _chain(text: str, name: str) -> list[str]:
    body = text[text.index(f"chain {name} ") :].split("}")[0]
    return [line.strip() for line in body.splitlines()[1:] if line.strip()]


def test_ipv6_rules_match_ipv6_packets_only_and_group_references_both_families() -> None:
    text = render_security(ports={"bdb": "eni-db", "xapp": "eni-app"}, state=_dual_stack_state())
    assert text.startswith("table inet vtb_sg {}\ndelete table inet vtb_sg\n")  # one table, both families
    assert _chain(text, "in_bdb") == [
        "ip6 saddr 2001:db8:0:1ff::10/128 tcp dport 5432 return",
        # ICMPv6 from the group's members: only its IPv6 addresses (ICMPv6 is not carried over IPv4)
        "ip6 saddr @g6_sg_app meta l4proto ipv6-icmp icmpv6 type 128 return",
        "ip saddr @g_sg_app meta l4proto icmp return",  # and ICMP from its IPv4 ones only
        "meta nfproto ipv6 udp dport 53 return",  # ::/0: every IPv6 packet, no IPv4
        "counter drop",
    ]
    # the default egress of a group in a VPC with an IPv6 block: each family to anywhere
    assert _chain(text, "out_bdb") == ["meta nfproto ipv4 return", "meta nfproto ipv6 return", "counter drop"]
    # ICMPv6 of any type
    assert _chain(text, "out_xapp") == [
        "ip6 daddr 2001:db8::/56 meta l4proto ipv6-icmp return",
        "counter drop",
    ]
    # the members of sg-app in IPv6: its addresses and its /80 prefix
    assert "elements = { 2001:db8:0:100::4/128, 2001:db8:0:100:2::/80 }" in text
    assert "elements = { 10.0.1.5/32 }" in text


def test_ipv6_members_sort_apart_from_ipv4_ones() -> None:
    state = _dual_stack_state()
    assert state.members("sg-app", version=6) == (
        NET6("2001:db8:0:100::4/128"),
        NET6("2001:db8:0:100:2::/80"),
    )
    assert state.members("sg-app") == (NET("10.0.1.5/32"),)
