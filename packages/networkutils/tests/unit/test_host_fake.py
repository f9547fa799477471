from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest
from vpccni.networkutils.config import ConnmarkBackend, HostNetworkConfig
from vpccni.networkutils.eni import LinkRetry
from vpccni.networkutils.host import HostNetwork
from vpccni.networkutils.iptables import IptablesMode
from vpccni.networkutils.model import Rule
from vpccni.networkutils.nft import NFT_FAMILY, NFT_TABLE
from vpccni.networkutils.testing import FakeIptables, FakeNamespace, FakeNetwork, FakeNft

CONFIG = HostNetworkConfig(
    node_ip=IPv4Address("10.0.0.5"),
    primary_mac="0a:00:00:00:00:01",
    vpc_cidrs=(IPv4Network("10.0.0.0/16"),),
    external_service_cidrs=(IPv4Network("172.20.0.0/16"),),
)
NO_WAIT = LinkRetry(attempts=1, interval_s=0, sleep=lambda _: None)


@dataclasses.dataclass
class Host:
    ns: FakeNamespace
    iptables: FakeIptables
    nft: FakeNft
    network: HostNetwork


def make_host(mode: IptablesMode) -> Host:
    _, ns = FakeNetwork().add_namespace("host")
    ns.add_link("ens5", mac="0a:00:00:00:00:01", mtu=1500, up=True)
    iptables, nft = FakeIptables(mode), FakeNft()
    return Host(ns, iptables, nft, HostNetwork(netlink=ns, iptables=iptables, nft=nft, link_retry=NO_WAIT))


@pytest.fixture(params=[IptablesMode.LEGACY, IptablesMode.NFT])
def host(request: pytest.FixtureRequest) -> Host:
    return make_host(request.param)


def test_apply_converges_and_second_apply_changes_nothing(host: Host) -> None:
    first = host.network.apply(CONFIG)
    assert first.primary_ifname == "ens5" and first.changes
    assert host.network.apply(CONFIG).changes == ()
    assert host.ns.link("ens5").mtu == 9001  # type: ignore[union-attr]
    assert host.ns.read_sysctl("net/ipv4/conf/ens5/rp_filter") == "2"
    assert host.ns.read_sysctl("net/ipv4/ip_forward") == "1"
    assert [r for r in host.ns.rules() if r.priority in (1024, 1535)] == [
        Rule(priority=1024, table=254, fwmark=0x80, fwmask=0x80),
        Rule(priority=1535, table=254, dst=IPv4Network("172.20.0.0/16")),
    ]


def test_ipv6_mode_has_no_snat_or_connmark_and_forwards_ipv6(host: Host) -> None:
    host.network.apply(CONFIG)  # an IPv4 node turned into an IPv6 one keeps none of IPv4 mode's rules
    ipv6 = dataclasses.replace(CONFIG, ipv6=True)
    assert host.network.apply(ipv6).changes
    assert host.network.apply(ipv6).changes == ()
    nat = host.iptables.tables["nat"]
    assert "AWS-SNAT-CHAIN-0" not in nat and "AWS-CONNMARK-CHAIN-0" not in nat and nat["POSTROUTING"] == []
    assert host.iptables.rules("mangle", "PREROUTING") == [] and host.nft.tables == {}
    assert [r for r in host.ns.rules() if r.priority == 1024] == [
        Rule(priority=1024, table=254, fwmark=0x80, fwmask=0x80, family=6)
    ]
    for key, value in (
        ("net/ipv6/conf/all/forwarding", "1"),
        ("net/ipv6/conf/ens5/accept_ra", "2"),
        ("net/ipv6/conf/all/disable_ipv6", "0"),
        ("net/ipv4/ip_forward", "1"),  # egress-cni's IPv4 egress of the pods still needs it
    ):
        assert host.ns.read_sysctl(key) == value, key


def test_backend_follows_iptables_flavour() -> None:
    legacy, nft = make_host(IptablesMode.LEGACY), make_host(IptablesMode.NFT)
    assert legacy.network.apply(CONFIG).backend is ConnmarkBackend.IPTABLES
    assert "AWS-CONNMARK-CHAIN-0" in legacy.iptables.tables["nat"]
    assert legacy.nft.tables == {}
    assert nft.network.apply(CONFIG).backend is ConnmarkBackend.NFTABLES
    assert "AWS-CONNMARK-CHAIN-0" not in nft.iptables.tables["nat"]
    assert nft.iptables.rules("nat", "PREROUTING") == []
    assert (NFT_FAMILY, NFT_TABLE) in nft.nft.tables


def test_switching_backend_removes_the_other_ones_leftovers() -> None:
    host = make_host(IptablesMode.NFT)
    host.network.apply(dataclasses.replace(CONFIG, connmark_backend=ConnmarkBackend.IPTABLES))
    assert "AWS-CONNMARK-CHAIN-0" in host.iptables.tables["nat"]
    host.network.apply(CONFIG)
    assert "AWS-CONNMARK-CHAIN-0" not in host.iptables.tables["nat"]
    assert host.iptables.rules("nat", "PREROUTING") == []
    host.network.apply(dataclasses.replace(CONFIG, connmark_backend=ConnmarkBackend.IPTABLES))
    assert host.nft.tables == {}


def test_vpc_cidr_change_converges(host: Host) -> None:
    host.network.apply(
        dataclasses.replace(CONFIG, vpc_cidrs=(IPv4Network("10.0.0.0/16"), IPv4Network("10.1.0.0/16")))
    )
    host.network.apply(CONFIG)
    snat = host.iptables.rules("nat", "AWS-SNAT-CHAIN-0")
    assert [r for r in snat if "RETURN" in r] == [
        '-d 10.0.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN'
    ]
    assert host.network.apply(CONFIG).changes == ()


def test_external_snat_removes_snat_and_connmark(host: Host) -> None:
    host.network.apply(CONFIG)
    host.network.apply(dataclasses.replace(CONFIG, external_snat=True))
    nat = host.iptables.tables["nat"]
    assert "AWS-SNAT-CHAIN-0" not in nat and "AWS-CONNMARK-CHAIN-0" not in nat
    assert nat["POSTROUTING"] == [] and nat["PREROUTING"] == []
    assert host.nft.tables == {}
    assert len(host.iptables.rules("mangle", "PREROUTING")) == 3  # NodePort support still on


def test_external_snat_without_nodeport_drops_rule_1024(host: Host) -> None:
    host.network.apply(CONFIG)
    host.network.apply(dataclasses.replace(CONFIG, external_snat=True, node_port_support=False))
    assert all(r.priority != 1024 for r in host.ns.rules())
    assert host.iptables.rules("mangle", "PREROUTING") == []


def test_foreign_rules_are_left_alone_and_old_layouts_removed() -> None:
    host = make_host(IptablesMode.LEGACY)
    host.iptables.restore(
        "*nat\n:AWS-SNAT-CHAIN-0 - [0:0]\n:AWS-SNAT-CHAIN-1 - [0:0]\n:AWS-CONNMARK-CHAIN-0 - [0:0]\n"
        ":AWS-CONNMARK-CHAIN-1 - [0:0]\n:KUBE-SERVICES - [0:0]\n"
        "-A PREROUTING -m comment --comment kubernetes -j KUBE-SERVICES\n"
        '-A PREROUTING -i eni+ -m comment --comment "AWS, outbound connections" -m state --state NEW '
        "-j AWS-CONNMARK-CHAIN-0\n"
        '-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0\n'
        '-A AWS-SNAT-CHAIN-0 ! -d 10.0.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-1\n'
        "-A AWS-SNAT-CHAIN-1 -j SNAT --to-source 10.0.0.5\n"
        "-A AWS-CONNMARK-CHAIN-0 -j AWS-CONNMARK-CHAIN-1\n"
        "COMMIT\n"
    )
    host.network.apply(CONFIG)
    nat = host.iptables.tables["nat"]
    assert "AWS-SNAT-CHAIN-1" not in nat and "AWS-CONNMARK-CHAIN-1" not in nat
    assert nat["PREROUTING"][0] == "-m comment --comment kubernetes -j KUBE-SERVICES"
    assert not any("--state NEW" in rule for rule in nat["PREROUTING"])
    assert host.network.apply(CONFIG).changes == ()


def test_teardown_leaves_nothing(host: Host) -> None:
    host.network.apply(dataclasses.replace(CONFIG, exclude_snat_cidrs=(IPv4Network("192.168.0.0/16"),)))
    host.network.teardown()
    nat, mangle = host.iptables.tables["nat"], host.iptables.tables["mangle"]
    assert not any(chain.startswith("AWS-") for chain in nat)
    assert all(rules == [] for rules in [*nat.values(), *mangle.values()])
    assert host.nft.tables == {}
    assert all(r.priority not in (1024, 1535) for r in host.ns.rules())
    assert host.network.teardown() == []


def test_restore_is_one_atomic_transaction_per_table(host: Host) -> None:
    host.network.apply(CONFIG)
    assert [text.splitlines()[0] for text in host.iptables.restores] == ["*nat", "*mangle"]


def test_strict_branch_mode_moves_the_local_rule_below_the_vlan_rules_and_back(host: Host) -> None:
    local = [Rule(priority=0, table=255)]
    assert [r for r in host.ns.rules() if r.table == 255] == local
    strict = dataclasses.replace(CONFIG, local_rule_after_vlan_rules=True)
    changes = host.network.apply(strict).changes
    assert "rule from all lookup 255 prio 20 added" in changes
    assert [r for r in host.ns.rules() if r.table == 255] == [Rule(priority=20, table=255)]
    assert host.network.apply(strict).changes == ()
    host.network.apply(CONFIG)  # ENABLE_POD_ENI off again (or standard mode): the kernel's rule is back
    assert [r for r in host.ns.rules() if r.table == 255] == local
    host.network.apply(strict)
    host.network.teardown()
    assert [r for r in host.ns.rules() if r.table == 255] == local


def test_ipv6_strict_branch_mode_moves_the_ipv6_local_rule_and_keeps_ndp_with_ec2s_router(host: Host) -> None:
    """As upstream: the node family's local rule only, and ICMPv6 from fe80:ec2::1 still looked up locally (a
    VLAN link resolves its gateway); leaving strict mode puts both back."""
    host.ns.add_rule(Rule(priority=0, table=255, family=6))  # the kernel's, on a host with IPv6
    strict6 = dataclasses.replace(CONFIG, ipv6=True, local_rule_after_vlan_rules=True)
    changes = host.network.apply(strict6).changes
    router = Rule(priority=0, table=255, src=IPv6Network("fe80:ec2::1/128"), ip_proto=58)
    assert "rule from fe80:ec2::1 ipproto 58 lookup 255 prio 0 added" in changes
    assert sorted((r.family, r.priority) for r in host.ns.rules() if r.table == 255 and r != router) == [
        (4, 0),
        (6, 20),
    ]
    assert router in host.ns.rules()
    assert host.network.apply(strict6).changes == ()
    host.network.teardown()
    assert sorted((r.family, r.priority) for r in host.ns.rules() if r.table == 255) == [(4, 0), (6, 0)]
