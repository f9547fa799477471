"""egress-cni chained after aws-cni on a dual-stack testbed VPC, with the real agent: IPv4 egress of IPv6 pods
(an IPv6 cluster's default) and IPv6 egress of IPv4 pods (ENABLE_V6_EGRESS), real packets to the internet
host seen from the node's address, the FORWARD reject, and DELs that leave nothing, ipamd up or down."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo
from vpccni.testbed.modes import IPV6_CLUSTER_ENV as IPV6_ENV
from vpccni.testbed.modes import V6_EGRESS_ENV, dual_stack
from vpccni.testbed.noderunner import NodeRunner, Pod

if TYPE_CHECKING:
    from conftest import Agent


CLUSTER_CONFIG = ClusterConfig(cloud=dual_stack())


def add(agent: Agent, name: str) -> tuple[Pod, dict[str, Any]]:
    pod = agent.create_pod(namespace="default", name=name)
    added = NodeRunner.add(agent, pod)  # the whole chain through the shims (`Agent.add` is gRPC)
    assert added.ok, added.error
    assert [kind for kind, _ in added.plugins] == ["aws-cni", "egress-cni"]
    return pod, added.document


def egress_files(agent: Agent) -> list[str]:
    store = agent.state_dir / "egress-ipam" / "aws-cni"
    return sorted(p.name for p in store.iterdir() if p.name[0].isdigit()) if store.exists() else []


def nat_rules(agent: Agent, tool: str) -> str:
    return ns.exec_in_netns(agent.node.netns, [f"{tool}-save", "-t", "nat"])


def test_ipv6_pods_reach_the_ipv4_internet_as_the_node(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(**IPV6_ENV)
    plugins = json.loads(agent.conflist.read_text())["plugins"]
    assert [p["type"] for p in plugins] == ["aws-cni", "egress-cni", "portmap"]
    egress = plugins[1]
    assert (egress["enabled"], egress["nodeIP"]) == ("true", str(node.instance.primary_ip))
    assert egress["ipam"]["ranges"] == [[{"subnet": "169.254.172.0/22"}]]
    pod, result = add(agent, "web-0")
    names = [i["name"] for i in result["interfaces"]]
    assert names[3].startswith("egr") and names[4] == "v4if0" and len(result["ips"]) == 1
    v4 = ns.exec_in_netns(pod.netns, ["ip", "-4", "-o", "addr", "show", "v4if0"])
    egress_ip = ipaddress.IPv4Interface(v4.split()[3]).ip
    assert egress_ip in ipaddress.IPv4Network("169.254.172.0/22") and egress_files(agent) == [str(egress_ip)]
    with EchoServer(netns=cluster.datapath.router.internet_netns, ip=cluster.internet_ip) as server:
        assert tcp_echo(pod.netns, cluster.internet_ip, server.port) == str(node.instance.primary_ip)
    assert ping(pod.netns, cluster.vpc_host_ip), "IPv4 in the VPC too, from the node's address"
    assert "AWS-EGRESS-4" in nat_rules(agent, "iptables")

    other, _ = add(agent, "web-1")
    assert not ping(other.netns, egress_ip, timeout=1), "another pod cannot reach an egress address"
    assert NodeRunner.check(agent, pod).ok

    for p in (pod, other):
        deleted = NodeRunner.delete(agent, p)
        assert deleted.ok, deleted.error
        assert [kind for kind, _ in deleted.plugins] == ["egress-cni", "aws-cni"]
    assert egress_files(agent) == []
    assert str(egress_ip) not in ns.exec_in_netns(node.netns, ["ip", "-4", "route"])
    assert NodeRunner.delete(agent, pod).ok, "a repeated DEL succeeds"


def test_ipv4_pods_get_ipv6_egress_with_enable_v6_egress(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent(**V6_EGRESS_ENV)
    egress = json.loads(agent.conflist.read_text())["plugins"][1]
    assert egress["nodeIP"] == str(node.instance.primary_ipv6)
    assert egress["ipam"]["ranges"] == [[{"subnet": "fd00::ac:00/118"}]]
    pod, result = add(agent, "api-0")
    assert ipaddress.ip_interface(result["ips"][0]["address"]).version == 4
    assert result["interfaces"][4]["name"] == "v6if0"
    assert ns.exec_in_netns(pod.netns, ["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]).strip() == "1"
    internet6 = cluster.internet_ip6
    assert internet6 is not None
    with EchoServer(netns=cluster.datapath.router.internet_netns, ip=internet6) as server:
        assert tcp_echo(pod.netns, internet6, server.port) == str(node.instance.primary_ipv6)
    assert "AWS-EGRESS-6" in nat_rules(agent, "ip6tables")
    assert NodeRunner.delete(agent, pod).ok
    assert egress_files(agent) == []


def test_dels_made_while_ipamd_is_down_release_the_egress_address_at_its_start(
    node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(**IPV6_ENV)
    pod, _ = add(agent, "batch-0")
    assert len(egress_files(agent)) == 1
    agent.stop()
    deleted = NodeRunner.delete(agent, pod)
    assert deleted.ok, "both shims queue their DEL and succeed"
    assert len(egress_files(agent)) == 1
    agent.start()
    wait_for(lambda: egress_files(agent) == [], timeout_s=30, what="the queued egress DEL done")
    assert agent.enis()["AssignedIPs"] == 0
