"""ENABLE_MULTI_NIC with the real agent on a testbed node of a two-card instance type (hpc7a.12xlarge: two
network cards, two ENIs each): ENIs and warm pools on both cards, a pod annotated
`k8s.amazonaws.com/nicConfig: multi-nic-attachment` with an interface per card, real packets through each to
a VPC host (which sees the interface's own address), an ordinary pod beside it, DEL and a restart."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from vpccni.cniplugin.netconf import MULTI_NIC_ANNOTATION, MULTI_NIC_VALUE
from vpccni.testbed.cluster import Cluster
from vpccni.testbed.datapath.namespaces import exec_in_netns
from vpccni.testbed.datapath.probes import EchoServer, tcp_echo
from vpccni.testbed.noderunner import NodeRunner

if TYPE_CHECKING:
    from conftest import Agent

INSTANCE_TYPE = "hpc7a.12xlarge"
MULTI_NIC = {MULTI_NIC_ANNOTATION: MULTI_NIC_VALUE}


def _addresses(result: dict[str, object]) -> list[ipaddress.IPv4Address]:
    return [ipaddress.IPv4Interface(ip["address"]).ip for ip in result["ips"]]  # type: ignore[attr-defined]


def test_a_pod_with_an_interface_per_card_reaches_the_vpc_through_each(
    cluster: Cluster, agent_on: Callable[..., Agent], wait_for: Callable[..., object]
) -> None:
    node = cluster.add_node(instance_type=INSTANCE_TYPE)
    try:
        agent = agent_on(node, ENABLE_MULTI_NIC="true")
        # Card 1 gets an ENI of its own (upstream's one warm address), attached on that card.
        card1 = wait_for(
            lambda: [e for e in agent.ec2_enis().values() if e["Attachment"]["NetworkCardIndex"] == 1],
            what="an ENI on network card 1",
        )
        assert [e["Attachment"]["DeviceIndex"] for e in card1] == [0]
        enis = agent.introspect("/v1/enis")
        assert sorted(enis) == ["0", "1"] and list(enis["1"]["ENIs"]) == [card1[0]["NetworkInterfaceId"]]
        assert enis["1"]["ENIs"][card1[0]["NetworkInterfaceId"]]["RouteTableID"] == 10100

        trainer = agent.create_pod(namespace="ml", name="trainer", annotations=MULTI_NIC)
        plain = agent.create_pod(namespace="ml", name="web")
        added = NodeRunner.add(agent, trainer)  # Agent.add is the upstream gRPC client's AddNetwork
        assert added.ok, added.error
        result = added.document
        containers = [i for i in result["interfaces"] if i.get("sandbox") == trainer.netns_path]
        assert [(i["name"], i["mac"]) for i in containers] == [("eth0", "254"), ("mNicIf1", "10100")]
        first, second = _addresses(result)
        assert agent.ec2_owns(first) and agent.ec2_owns(second)
        assert f"{second}/32" in agent.ec2_cidrs()[card1[0]["NetworkInterfaceId"]]
        other = NodeRunner.add(agent, plain)
        assert other.ok, other.error
        (plain_ip,) = _addresses(other.document)

        # Real packets: from each interface's address to a VPC host, which sees that address (EC2's
        # source/destination check would drop a packet leaving through the other card's ENI).
        vpc_host, host_ip = cluster.datapath.router.vpc_host_netns, cluster.vpc_host_ip
        with EchoServer(netns=vpc_host, ip=host_ip) as server:
            seen = [
                tcp_echo(trainer.netns, host_ip, server.port, source=first),
                tcp_echo(trainer.netns, host_ip, server.port, source=second),
                tcp_echo(plain.netns, host_ip, server.port),
            ]
        assert seen == [str(first), str(second), str(plain_ip)]

        assert agent.check(trainer).ok
        pods = agent.introspect("/v1/enis")
        assert (
            sum(
                1
                for card in pods.values()
                for eni in card["ENIs"].values()
                for cidr in eni["AvailableIPv4Cidrs"].values()
                for a in cidr["IPAddresses"].values()
                if a["IPAMMetadata"].get("k8sPodName") == "trainer"
            )
            == 2
        )
        nic_file = agent.checkpoint.with_name(agent.checkpoint.stem + "-nic-1.json")
        assert [a["ipv4"] for a in json.loads(nic_file.read_text())["allocations"]] == [str(second)]

        # A restart restores both cards' pods from their checkpoints.
        agent.stop()
        agent.start()
        assert agent.check(trainer).ok

        assert NodeRunner.delete(agent, trainer).ok and NodeRunner.delete(agent, plain).ok
        assert json.loads(nic_file.read_text())["allocations"] == []
        rules = exec_in_netns(node.netns, ["ip", "rule", "show"])
        assert str(first) not in rules and str(second) not in rules, rules
    finally:
        cluster.remove_node(node)


def test_prefix_delegation_serves_each_card_from_its_own_prefixes(
    cluster: Cluster, agent_on: Callable[..., Agent], wait_for: Callable[..., object]
) -> None:
    node = cluster.add_node(instance_type=INSTANCE_TYPE)
    try:
        agent = agent_on(
            node, ENABLE_MULTI_NIC="true", ENABLE_PREFIX_DELEGATION="true", WARM_PREFIX_TARGET="1"
        )
        card1 = wait_for(
            lambda: [
                e
                for e in agent.ec2_enis().values()
                if e["Attachment"]["NetworkCardIndex"] == 1 and e.get("Ipv4Prefixes")
            ],
            what="an ENI with a /28 prefix on network card 1",
        )
        card1_eni = card1[0]["NetworkInterfaceId"]
        prefixes = [ipaddress.IPv4Network(p["Ipv4Prefix"]) for p in card1[0]["Ipv4Prefixes"]]
        assert prefixes and all(p.prefixlen == 28 for p in prefixes)

        trainer = agent.create_pod(namespace="ml", name="trainer-pd", annotations=MULTI_NIC)
        added = NodeRunner.add(agent, trainer)
        assert added.ok, added.error
        first, second = _addresses(added.document)
        assert any(second in p for p in prefixes), (second, prefixes)  # card 1's address from card 1's prefix
        primary_enis = [e for e in agent.ec2_enis().values() if e["Attachment"]["NetworkCardIndex"] == 0]
        card0_prefixes = [
            ipaddress.IPv4Network(p["Ipv4Prefix"]) for e in primary_enis for p in e.get("Ipv4Prefixes", [])
        ]
        assert any(first in p for p in card0_prefixes), (first, card0_prefixes)

        vpc_host, host_ip = cluster.datapath.router.vpc_host_netns, cluster.vpc_host_ip
        with EchoServer(netns=vpc_host, ip=host_ip) as server:
            seen = [
                tcp_echo(trainer.netns, host_ip, server.port, source=first),
                tcp_echo(trainer.netns, host_ip, server.port, source=second),
            ]
        assert seen == [str(first), str(second)]

        agent.stop()
        agent.start()
        assert agent.check(trainer).ok
        assert NodeRunner.delete(agent, trainer).ok
        nic_file = agent.checkpoint.with_name(agent.checkpoint.stem + "-nic-1.json")
        assert json.loads(nic_file.read_text())["allocations"] == []
        assert card1_eni in agent.ec2_enis()  # the card's prefix stays warm on its ENI
        rules = exec_in_netns(node.netns, ["ip", "rule", "show"])
        assert str(first) not in rules and str(second) not in rules, rules
    finally:
        cluster.remove_node(node)
