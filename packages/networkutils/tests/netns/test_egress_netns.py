"""Egress rules against real iptables and ip6tables (both flavours) inside throw-away namespaces."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from vpccni.networkutils.commands import ToolRunner
from vpccni.networkutils.config import SnatRandomization
from vpccni.networkutils.egress import V4_RANGE, V6_RANGE, EgressHostRules, EgressRules
from vpccni.networkutils.iptables import CommandIptables, IptablesCommands, IptablesMode

V4 = EgressRules(family=4, subnet=V4_RANGE, node_ip=IPv4Address("10.0.0.5"))
V6 = EgressRules(
    family=6, subnet=V6_RANGE, node_ip=IPv6Address("2001:db8::5"), randomize=SnatRandomization.HASHRANDOM
)


def rules_in(ns: Any, mode: IptablesMode) -> EgressHostRules:
    runner = ToolRunner(netns=ns.name)
    return EgressHostRules(
        iptables=CommandIptables(commands=IptablesCommands.flavour(mode), runner=runner),
        ip6tables=CommandIptables(commands=IptablesCommands.flavour(mode, family=6), runner=runner),
    )


def save(ns: Any, mode: IptablesMode, family: int, table: str) -> list[str]:
    tool = "ip6tables" if family == 6 else "iptables"
    suffix = "legacy" if mode is IptablesMode.LEGACY else "nft"
    out = ns.sh(f"{tool}-{suffix}-save", "-t", table)
    return [line for line in out.splitlines() if line.startswith("-A ")]


@pytest.mark.parametrize("mode", [IptablesMode.LEGACY, IptablesMode.NFT])
def test_ipv4_egress_snat_and_the_forward_reject_come_first(make_netns: Any, mode: IptablesMode) -> None:
    ns = make_netns("egress4")
    tool = "iptables-legacy" if mode is IptablesMode.LEGACY else "iptables-nft"
    ns.sh(tool, "-A", "FORWARD", "-j", "ACCEPT")  # e.g. kube-proxy's, before we start
    # What an upstream egress-cni left for one pod: its own chain and jump (same SNAT as ours).
    legacy = "CNI-E4-0123456789abcdef01234"
    ns.sh(tool, "-t", "nat", "-N", legacy)
    ns.sh(tool, "-t", "nat", "-A", legacy, "-j", "SNAT", "--to-source", "10.0.0.5")
    ns.sh(tool, "-t", "nat", "-A", "POSTROUTING", "-s", "169.254.172.9", "-j", legacy)
    host = rules_in(ns, mode)
    assert host.apply([V4])
    assert save(ns, mode, 4, "filter") == [
        '-A FORWARD -d 169.254.172.0/22 -m conntrack --ctstate NEW -m comment --comment "Block Node Local '
        'Pod access via IPv4" -j REJECT --reject-with icmp-port-unreachable',
        "-A FORWARD -j ACCEPT",
    ]
    assert save(ns, mode, 4, "nat") == [
        '-A POSTROUTING -s 169.254.172.0/22 -m comment --comment "AWS egress SNAT" -j AWS-EGRESS-4',
        '-A AWS-EGRESS-4 -d 224.0.0.0/4 -m comment --comment "AWS, egress" -j ACCEPT',
        '-A AWS-EGRESS-4 -m comment --comment "AWS, egress" -j SNAT --to-source 10.0.0.5 --random-fully',
    ]
    assert host.apply([V4]) == [], "converged: nothing to change"
    ns.sh(tool, "-I", "FORWARD", "1", "-j", "ACCEPT")  # someone got ahead of the reject
    assert host.apply([V4]) == ["iptables filter updated"]
    assert save(ns, mode, 4, "filter")[0].startswith("-A FORWARD -d 169.254.172.0/22")
    host.teardown()
    assert save(ns, mode, 4, "filter") == ["-A FORWARD -j ACCEPT", "-A FORWARD -j ACCEPT"]
    assert save(ns, mode, 4, "nat") == []


@pytest.mark.parametrize("mode", [IptablesMode.LEGACY, IptablesMode.NFT])
def test_ipv6_egress_uses_ip6tables(make_netns: Any, mode: IptablesMode) -> None:
    ns = make_netns("egress6")
    host = rules_in(ns, mode)
    host.apply([V6, EgressRules(family=4, subnet=V4_RANGE, node_ip=None, block_forwarding=False)])
    assert save(ns, mode, 6, "nat") == [
        '-A POSTROUTING -s fd00::ac:0/118 -m comment --comment "AWS egress SNAT" -j AWS-EGRESS-6',
        '-A AWS-EGRESS-6 -d ff00::/8 -m comment --comment "AWS, egress" -j ACCEPT',
        '-A AWS-EGRESS-6 -m comment --comment "AWS, egress" -j SNAT --to-source 2001:db8::5 --random',
    ]
    assert save(ns, mode, 6, "filter")[0].endswith("-j REJECT --reject-with icmp6-port-unreachable")
    assert save(ns, mode, 4, "nat") == save(ns, mode, 4, "filter") == []
    assert host.apply([V6]) == []
    host.apply([])
    assert save(ns, mode, 6, "nat") == save(ns, mode, 6, "filter") == []
