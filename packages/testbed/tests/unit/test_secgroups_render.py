"""The security-group table the VPC datapath renders from EC2 state (the netns tier runs it on packets)."""

from __future__ import annotations

import ipaddress

from vpccni.testbed.datapath.secgroups import render_security
from vpccni.testbed.ec2.security import GroupRules, SecurityState, SgRule

NET = ipaddress.IPv4Network


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
    assert "meta l4proto icmp icmp type 8 return" in ingress  # 0.0.0.0/0: no address match
    assert ingress.strip().endswith("counter drop")
    egress = text[text.index("chain out_bweb") :].split("}")[0]
    assert "\n    return\n" in egress  # all traffic anywhere
    # a group without rules admits and sends nothing
    assert text[text.index("chain in_xapp") :].split("}")[0].split("{")[1].split() == ["counter", "drop"]
    # the referenced group's members: every address of its ENIs
    assert "elements = { 10.0.1.5/32, 10.0.1.16/28 }" in text
    # an ENI EC2 does not list is not filtered; replies of tracked connections always pass
    assert "xnode" not in text
    assert text.index("ct state established,related accept") < text.index("iifname vmap")


def test_nothing_filtered_without_listed_enis() -> None:
    text = render_security(ports={"x1": "eni-1"}, state=SecurityState())
    assert "vmap" not in text and "chain forward" in text
