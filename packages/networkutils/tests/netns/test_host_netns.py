"""HostNetwork against real iptables (both flavours) and nft, run inside throw-away namespaces."""

from __future__ import annotations

import dataclasses
import re
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from vpccni.networkutils.commands import ToolRunner
from vpccni.networkutils.config import ConnmarkBackend, HostNetworkConfig, SnatRandomization
from vpccni.networkutils.eni import LinkRetry
from vpccni.networkutils.host import HostNetwork, HostNetworkResult
from vpccni.networkutils.iptables import CommandIptables, IptablesCommands, IptablesMode
from vpccni.networkutils.netlink import Netlink
from vpccni.networkutils.nft import CommandNft

MAC = "0a:00:00:00:00:01"
CONFIG = HostNetworkConfig(
    node_ip=IPv4Address("10.0.0.5"),
    primary_mac=MAC,
    vpc_cidrs=(IPv4Network("10.0.0.0/16"), IPv4Network("100.64.0.0/16")),
    exclude_snat_cidrs=(IPv4Network("192.168.0.0/16"),),
    external_service_cidrs=(IPv4Network("172.20.0.0/16"),),
)


@dataclasses.dataclass
class Node:
    ns: Any
    mode: IptablesMode

    def host(self, netlink: Netlink) -> HostNetwork:
        runner = ToolRunner(netns=self.ns.name)
        return HostNetwork(
            netlink=netlink,
            iptables=CommandIptables(commands=IptablesCommands.flavour(self.mode), runner=runner),
            nft=CommandNft(runner=runner),
            link_retry=LinkRetry(attempts=1),
        )

    def apply(self, config: HostNetworkConfig) -> HostNetworkResult:
        return self.ns.run(lambda nl: self.host(nl).apply(config))

    def teardown(self) -> list[str]:
        return self.ns.run(lambda nl: self.host(nl).teardown())

    def iptables_dump(self) -> str:
        suffix = "legacy" if self.mode is IptablesMode.LEGACY else "nft"
        out = self.ns.sh(f"iptables-{suffix}-save")
        return "\n".join(line for line in out.splitlines() if not line.startswith("#"))

    def nft_dump(self) -> str:
        return re.sub(r"packets \d+ bytes \d+", "", self.ns.sh("nft", "list", "ruleset"))

    def dump(self) -> tuple[str, str, Any]:
        return self.iptables_dump(), self.nft_dump(), self.ns.ip_json("rule")

    def rules(self) -> list[tuple[int, str]]:
        out = []
        for rule in self.ns.ip_json("rule"):
            if "dst" in rule:
                what = f"to {rule['dst']}/{rule.get('dstlen', 32)}"
            elif "fwmark" in rule:
                what = f"fwmark {rule['fwmark']}/{rule.get('fwmask', '')}"
            else:
                what = ""
            out.append((rule["priority"], f"{what} lookup {rule['table']}".strip()))
        return out


@pytest.fixture(params=["legacy", "nft"])
def node(request: pytest.FixtureRequest, make_netns) -> Node:
    ns = make_netns(f"n{request.param}")
    ns.sh("ip", "link", "add", "ens5", "address", MAC, "type", "veth", "peer", "name", "ens5p")
    mode = IptablesMode.LEGACY if request.param == "legacy" else IptablesMode.NFT
    return Node(ns=ns, mode=mode)


def test_apply_twice_changes_nothing_the_second_time(node: Node) -> None:
    first = node.apply(CONFIG)
    expected_backend = ConnmarkBackend.NFTABLES if node.mode is IptablesMode.NFT else ConnmarkBackend.IPTABLES
    assert first.backend is expected_backend and first.primary_ifname == "ens5"
    before = node.dump()
    second = node.apply(CONFIG)
    assert second.changes == ()
    assert node.dump() == before

    dump = node.iptables_dump()
    assert '-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0' in dump
    assert (
        '-A AWS-SNAT-CHAIN-0 ! -o vlan+ -m comment --comment "AWS, SNAT" -m addrtype ! --dst-type LOCAL '
        "-j SNAT --to-source 10.0.0.5 --random-fully"
    ) in dump
    assert "--limit-iface-in -j CONNMARK --set-xmark 0x80/0x80" in dump
    if node.mode is IptablesMode.NFT:
        assert "AWS-CONNMARK-CHAIN-0" not in dump
        nft = node.ns.sh("nft", "list", "table", "ip", "aws-cni")
        assert "chain nat-prerouting" in nft and "ip daddr 192.168.0.0/16 return" in nft
    else:
        assert (
            '-A AWS-CONNMARK-CHAIN-0 -d 192.168.0.0/16 -m comment --comment "AWS CONNMARK CHAIN" -j RETURN'
            in dump
        )
        assert "aws-cni" not in node.nft_dump()
    assert node.rules() == [
        (0, "lookup local"),
        (1024, "fwmark 0x80/0x80 lookup main"),
        (1535, "to 172.20.0.0/16 lookup main"),
        (32766, "lookup main"),
        (32767, "lookup default"),
    ]
    assert node.ns.sh("cat", "/proc/sys/net/ipv4/conf/ens5/rp_filter").strip() == "2"
    assert node.ns.sh("cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    [link] = node.ns.ip_json("link", "show", "dev", "ens5")
    assert link["mtu"] == 9001


def test_converges_after_config_change(node: Node) -> None:
    node.apply(dataclasses.replace(CONFIG, vpc_cidrs=(*CONFIG.vpc_cidrs, IPv4Network("10.9.0.0/16"))))
    assert "10.9.0.0/16" in node.iptables_dump()
    changed = dataclasses.replace(CONFIG, randomize_snat=SnatRandomization.HASHRANDOM)
    assert node.apply(changed).changes
    dump = node.iptables_dump()
    assert "10.9.0.0/16" not in dump and "10.9.0.0/16" not in node.nft_dump()
    assert re.search(r"--to-source 10\.0\.0\.5 --random$", dump, re.MULTILINE)
    assert node.apply(changed).changes == ()
    # Then external SNAT: SNAT and connmark go, NodePort mangle rules stay.
    external = dataclasses.replace(changed, external_snat=True)
    node.apply(external)
    dump = node.iptables_dump()
    assert "AWS-SNAT-CHAIN-0" not in dump and "AWS-CONNMARK-CHAIN-0" not in dump
    assert "aws-cni" not in node.nft_dump()
    assert dump.count('"AWS, primary ENI"') == 3
    assert node.apply(external).changes == ()


def test_switching_connmark_backend_cleans_the_other(make_netns) -> None:
    ns = make_netns("switch")
    ns.sh("ip", "link", "add", "ens5", "address", MAC, "type", "veth", "peer", "name", "ens5p")
    node = Node(ns=ns, mode=IptablesMode.NFT)
    node.apply(dataclasses.replace(CONFIG, connmark_backend=ConnmarkBackend.IPTABLES))
    assert "AWS-CONNMARK-CHAIN-0" in node.iptables_dump()
    node.apply(CONFIG)
    assert "AWS-CONNMARK-CHAIN-0" not in node.iptables_dump()
    assert '"AWS, CONNMARK"' not in node.iptables_dump()
    assert "table ip aws-cni" in node.nft_dump()
    node.apply(dataclasses.replace(CONFIG, connmark_backend=ConnmarkBackend.IPTABLES))
    assert "aws-cni" not in node.nft_dump()


def test_old_layout_is_cleaned(node: Node) -> None:
    suffix = "legacy" if node.mode is IptablesMode.LEGACY else "nft"
    old = (
        "*nat\n:AWS-SNAT-CHAIN-0 - [0:0]\n:AWS-SNAT-CHAIN-1 - [0:0]\n:AWS-CONNMARK-CHAIN-0 - [0:0]\n"
        '-A PREROUTING -i eni+ -m comment --comment "AWS, outbound connections" -m state --state NEW '
        "-j AWS-CONNMARK-CHAIN-0\n"
        '-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0\n'
        '-A AWS-SNAT-CHAIN-0 ! -d 10.0.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-1\n'
        "-A AWS-SNAT-CHAIN-1 -j SNAT --to-source 10.0.0.5\n"
        "COMMIT\n"
    )
    node.ns.sh("sh", "-c", f"printf '%s' '{old}' | iptables-{suffix}-restore --noflush")
    node.apply(CONFIG)
    dump = node.iptables_dump()
    assert "AWS-SNAT-CHAIN-1" not in dump and "--state NEW" not in dump
    assert node.apply(CONFIG).changes == ()


def test_teardown_leaves_no_chain(node: Node) -> None:
    node.apply(CONFIG)
    node.teardown()
    dump = node.iptables_dump()
    assert "AWS" not in dump
    assert [line for line in dump.splitlines() if line.startswith("-A")] == []
    assert "aws-cni" not in node.nft_dump()
    assert [prio for prio, _ in node.rules()] == [0, 32766, 32767]
    assert node.teardown() == []


def test_ipv6_strict_branch_mode_local_rule_and_router_ndp_rule_round_trip(node: Node) -> None:
    """The real kernel: the IPv6 local rule at 20 and ICMPv6 from fe80:ec2::1 looked up locally at 0 (read
    back equal, so a second apply changes nothing); teardown restores the kernel's rule."""
    strict6 = dataclasses.replace(CONFIG, ipv6=True, local_rule_after_vlan_rules=True)
    node.apply(strict6)
    rules6 = node.ns.ip_json("-6", "rule")
    local = sorted(
        (r["priority"], r.get("src", "all"), r.get("ipproto", "")) for r in rules6 if r["table"] == "local"
    )
    assert local == [(0, "fe80:ec2::1", "ipv6-icmp"), (20, "all", "")]
    assert (0, "lookup local") in node.rules()  # the IPv4 rule stays (upstream moves the node family's)
    assert node.apply(strict6).changes == ()
    node.teardown()
    rules6 = node.ns.ip_json("-6", "rule")
    assert sorted((r["priority"], r.get("src", "all")) for r in rules6 if r["table"] == "local") == [
        (0, "all")
    ]
