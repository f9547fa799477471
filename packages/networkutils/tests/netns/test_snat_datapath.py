"""Real packets: a pod on a secondary ENI reaches an off-VPC host only through connmark + SNAT.

Topology (every namespace made by the test): pod --veth-- node --ens5-- vpc (gateway 10.0.0.1, "internet"
host 203.0.113.10, no route back to pod IPs) and node --eth1-- blackhole (the secondary ENI's gateway, which
forwards nothing). A reply can only come back if the packet left through ens5 (fwmark rule 1024, so the
connmark worked) and was SNATed to the node IP (AWS-SNAT-CHAIN-0).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from vpccni.networkutils.commands import ToolRunner
from vpccni.networkutils.config import ConnmarkBackend, HostNetworkConfig
from vpccni.networkutils.eni import EniNetwork, LinkRetry, setup_eni_network
from vpccni.networkutils.host import HostNetwork
from vpccni.networkutils.iptables import CommandIptables, IptablesCommands, IptablesMode
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.netns import ThreadNetnsNetlink
from vpccni.networkutils.nft import CommandNft
from vpccni.networkutils.pod import PodInterface, PodWiring

PRIMARY_MAC = "0a:00:00:00:00:01"
ENI_MAC = "0a:00:00:00:00:02"
INTERNET = "203.0.113.10"
CONFIG = HostNetworkConfig(
    node_ip=IPv4Address("10.0.0.5"),
    primary_mac=PRIMARY_MAC,
    vpc_cidrs=(IPv4Network("10.0.0.0/16"),),
    node_port_support=False,
)


def build(make_netns) -> tuple[Any, Any]:
    node, vpc, blackhole, pod = (make_netns(tag) for tag in ("node", "vpc", "bh", "pod"))
    node.sh(
        "ip",
        "link",
        "add",
        "ens5",
        "address",
        PRIMARY_MAC,
        "type",
        "veth",
        "peer",
        "name",
        "vpca",
        "netns",
        vpc.name,
    )
    node.sh(
        "ip",
        "link",
        "add",
        "eth1",
        "address",
        ENI_MAC,
        "type",
        "veth",
        "peer",
        "name",
        "bh",
        "netns",
        blackhole.name,
    )
    node.sh("ip", "addr", "add", "10.0.0.5/24", "dev", "ens5")
    node.sh("ip", "link", "set", "ens5", "up")
    node.sh("ip", "route", "add", "default", "via", "10.0.0.1")
    vpc.sh("ip", "addr", "add", "10.0.0.1/24", "dev", "vpca")
    vpc.sh("ip", "link", "set", "vpca", "up")
    vpc.sh("ip", "addr", "add", f"{INTERNET}/32", "dev", "lo")
    blackhole.sh("ip", "addr", "add", "10.0.2.1/24", "dev", "bh")
    blackhole.sh("ip", "link", "set", "bh", "up")
    eni = EniNetwork(
        mac=ENI_MAC, primary_ip=IPv4Address("10.0.2.10"), subnet=IPv4Network("10.0.2.0/24"), route_table=2
    )
    node.run(lambda nl: setup_eni_network(nl, eni, retry=LinkRetry(attempts=1)))
    spec = PodInterface(host_veth=host_veth_name("default", "web"), ip=IPv4Address("10.0.1.5"), route_table=2)
    node.run(lambda nl: PodWiring(host=nl, namespaces=ThreadNetnsNetlink()).wire(pod.fd, spec))
    return node, pod


def apply(node: Any, mode: IptablesMode, config: HostNetworkConfig) -> None:
    runner = ToolRunner(netns=node.name)
    iptables = CommandIptables(commands=IptablesCommands.flavour(mode), runner=runner)

    def go(nl: Any) -> None:
        HostNetwork(netlink=nl, iptables=iptables, nft=CommandNft(runner=runner)).apply(config)

    node.run(go)


def ping(pod: Any, count: int) -> bool:
    """True if any of `count` echo requests is answered."""
    out = pod.sh("busybox", "ping", "-c", str(count), "-i", "0.2", "-W", "2", INTERNET, check=False)
    found = re.search(r"(\d+) packets received", out)
    return bool(found and int(found.group(1)) > 0)


@pytest.mark.parametrize(
    ("mode", "backend"),
    [(IptablesMode.LEGACY, ConnmarkBackend.IPTABLES), (IptablesMode.NFT, ConnmarkBackend.NFTABLES)],
)
def test_off_vpc_traffic_from_secondary_eni_pod_is_marked_and_snatted(make_netns, mode, backend) -> None:
    node, pod = build(make_netns)
    apply(node, mode, CONFIG)
    assert ping(pod, count=3)
    conntrack = node.sh("conntrack", "-L", "-p", "icmp", check=False)
    assert f"src=10.0.1.5 dst={INTERNET}" in conntrack and f"src={INTERNET} dst=10.0.0.5" in conntrack
    # Control: with SNAT and connmark handed to an external device, the same packet has no way back.
    node.sh("conntrack", "-F", check=False)
    apply(node, mode, HostNetworkConfig(**{**CONFIG.__dict__, "external_snat": True}))
    assert not ping(pod, count=1)
