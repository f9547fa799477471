"""IPv6 mode of the real aws-k8s-agent on a dual-stack testbed VPC: one /80 on the primary ENI, a /128 per pod
through the shim, real IPv6 packets between pods, to a VPC host and to the internet, and the /80 reconciled
against EC2."""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo
from vpccni.testbed.modes import IPV6_CLUSTER_ENV as IPV6_ENV
from vpccni.testbed.modes import dual_stack
from vpccni.testbed.noderunner import NodeRunner

if TYPE_CHECKING:
    from conftest import Agent


CLUSTER_CONFIG = ClusterConfig(cloud=dual_stack())


def ec2_ipv6_prefixes(agent: Agent) -> list[str]:
    eni = agent.ec2_enis()[agent.node.instance.primary_eni_id]
    return [p["Ipv6Prefix"] for p in eni.get("Ipv6Prefixes", [])]


def introspected_ipv6(agent: Agent) -> dict[str, set[str]]:
    return {eni_id: set(eni["IPv6Cidrs"]) for eni_id, eni in agent.enis()["ENIs"].items()}


def test_node_init_takes_one_slash_80_on_the_primary_eni_only(
    node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(**IPV6_ENV)
    (prefix,) = ec2_ipv6_prefixes(agent)
    assert ipaddress.IPv6Network(prefix).prefixlen == 80
    assert introspected_ipv6(agent) == {node.instance.primary_eni_id: {prefix}}
    assert len(agent.ec2_enis()) == 1, "IPv6 mode attaches no other ENI"
    enis = agent.enis()
    assert enis["TotalIPs"] == 2**48 and enis["AssignedIPs"] == 0
    reply = agent.add("p0")
    assert reply.Success and reply.IPAllocationMetadata[0].IPv4Addr == ""
    ip = ipaddress.IPv6Address(reply.IPAllocationMetadata[0].IPv6Addr)
    assert ip in ipaddress.IPv6Network(prefix)
    assert "awscni_assigned_ip_addresses 1.0" in agent.metrics()
    assert agent.delete("p0").Success


def test_a_slash_80_ec2_no_longer_has_is_dropped_and_replaced(
    node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(**IPV6_ENV)
    (old,) = ec2_ipv6_prefixes(agent)
    ec2 = agent.cluster.cloud.ec2_client()
    ec2.unassign_ipv6_addresses(NetworkInterfaceId=node.instance.primary_eni_id, Ipv6Prefixes=[old])
    # Someone else's ENI takes the freed /80 at once (EC2 hands out the lowest free one): ipamd must drop it.
    other = ec2.create_network_interface(SubnetId=node.instance.subnet_id)["NetworkInterface"]
    taken = ec2.assign_ipv6_addresses(NetworkInterfaceId=other["NetworkInterfaceId"], Ipv6PrefixCount=1)
    assert taken["AssignedIpv6Prefixes"] == [old]

    def replaced() -> str | None:
        seen = introspected_ipv6(agent)[node.instance.primary_eni_id]
        ec2 = ec2_ipv6_prefixes(agent)
        return ec2[0] if len(ec2) == 1 and ec2[0] != old and seen == set(ec2) else None

    new = wait_for(replaced, what="the /80 reconciled away and a new one assigned")
    reply = agent.add("p1")
    assert reply.Success
    assert ipaddress.IPv6Address(reply.IPAllocationMetadata[0].IPv6Addr) in ipaddress.IPv6Network(new)
    assert agent.delete("p1").Success


def test_ipv6_pods_through_the_shim_reach_each_other_the_vpc_and_the_internet(
    cluster: Cluster, agent_on: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agents = [agent_on(cluster.add_node(), **IPV6_ENV) for _ in range(2)]
    pods, ips = [], []
    for agent in agents:
        pod = agent.create_pod(namespace="default", name=f"web-{agent.node.name}")
        added = NodeRunner.add(agent, pod)  # through the shim (`Agent.add` is the gRPC call)
        assert added.ok, added.error
        (ip,) = added.document["ips"]
        assert ip["version"] == "6" and ip["interface"] == 1
        address = ipaddress.IPv6Interface(ip["address"])
        assert address.network.prefixlen == 128
        assert agent.check(pod).ok
        pods.append(pod)
        ips.append(address.ip)
    routes = ns.exec_in_netns(pods[0].netns, ["ip", "-6", "route", "show", "default"])
    assert routes.split()[:3] == ["default", "via", "fe80::1"]

    assert ping(pods[0].netns, ips[1]), "pod to pod across nodes"
    assert ping(agents[1].node.netns, ips[0]), "node to a pod on another node"
    vpc_host, internet = cluster.vpc_host_ip6, cluster.internet_ip6
    assert vpc_host is not None and internet is not None
    assert ping(pods[0].netns, vpc_host), "pod to a VPC host"
    with EchoServer(netns=cluster.datapath.router.internet_netns, ip=internet) as server:
        # IPv6 egress is not translated: the internet sees the pod's own address.
        assert tcp_echo(pods[0].netns, internet, server.port) == str(ips[0])

    for agent, pod, ip in zip(agents, pods, ips, strict=True):
        host_veth = agent.result_of(pod)["interfaces"][0]["name"]  # type: ignore[index]
        deleted = NodeRunner.delete(agent, pod)
        assert deleted.ok, deleted.error
        node_ns = agent.node.netns
        assert_no_route_or_rule(node_ns, ip)
        assert NodeRunner.delete(agent, pod).ok, "a repeated DEL succeeds"
        agent.remove_pod(pod)  # the runtime destroys the sandbox; its veth goes with it
        wait_for(
            lambda: host_veth not in ns.exec_in_netns(node_ns, ["ip", "-o", "link"]),  # noqa: B023
            timeout_s=10,
            what=f"{host_veth} gone with the sandbox",
        )


def test_a_killed_agent_restores_its_ipv6_pods_and_their_dels_leave_nothing(
    node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(**IPV6_ENV)
    pods, ips = [], []
    for name in ("keep-0", "keep-1"):
        pod = agent.create_pod(namespace="default", name=name)
        added = NodeRunner.add(agent, pod)  # aws-cni and egress-cni through the shims
        assert added.ok, added.error
        pods.append(pod)
        ips.append(ipaddress.IPv6Interface(added.document["ips"][0]["address"]).ip)
    agent.stop(signal.SIGKILL)

    agent.start()
    restored = {
        ip for eni in agent.enis()["ENIs"].values() for cidr in eni["IPv6Cidrs"].values()
        for ip, addr in cidr["IPAddresses"].items() if addr["IPAMMetadata"]["k8sPodName"]
    }  # fmt: skip
    assert restored == {str(ip) for ip in ips}, "every IPv6 pod restored from the checkpoint"
    assert agent.enis()["AssignedIPs"] == 2
    assert all(agent.check(pod).ok for pod in pods), "their wiring is untouched by the restart"
    assert ping(pods[0].netns, ips[1]), "pod to pod on the node after the restart"
    fresh = agent.add("after-restart")
    assert fresh.Success and ipaddress.IPv6Address(fresh.IPAllocationMetadata[0].IPv6Addr) not in ips
    assert agent.delete("after-restart").Success

    node_ns = agent.node.netns
    for pod, ip in zip(pods, ips, strict=True):
        assert NodeRunner.delete(agent, pod).ok
        assert_no_route_or_rule(node_ns, ip)
    assert agent.enis()["AssignedIPs"] == 0
    store = agent.state_dir / "egress-ipam" / "aws-cni"
    assert not [p for p in store.iterdir() if p.name[0].isdigit()], "no egress address left reserved"


def assert_no_route_or_rule(node_ns: str, ip: ipaddress.IPv6Address) -> None:
    """Whole words, so that an address is never taken for a longer one it begins."""
    for listing in (["route", "show", "table", "all"], ["rule"]):
        words = ns.exec_in_netns(node_ns, ["ip", "-6", *listing]).replace("/", " ").split()
        assert str(ip) not in words, f"{ip} left in ip -6 {listing[0]}"
