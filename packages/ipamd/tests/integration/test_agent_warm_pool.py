"""The warm pool of the real aws-k8s-agent on an m5.large testbed node (3 ENIs x 9 secondary IPs, or 9 /28
prefixes per ENI), observed through introspection `/v1/enis` and EC2's DescribeNetworkInterfaces."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vpccni.testbed.cluster import Cluster, Node

if TYPE_CHECKING:
    from conftest import Agent

IPS_PER_ENI = 9  # m5.large: 10 IPv4 per ENI, minus the ENI's own primary


def settled(agent: Agent, *, enis: int, total_ips: int) -> bool:
    """Introspection shows `enis` ENIs holding `total_ips` addresses, exactly what EC2 has attached."""
    seen = agent.introspected_cidrs()
    if len(seen) != enis or sum(len(c) for c in seen.values()) != total_ips:
        return False
    assert seen == agent.ec2_cidrs(), "ipamd's datastore and EC2 disagree"
    return True


def prefixes_settled(agent: Agent, *, prefixes: int) -> bool:
    seen = agent.introspected_cidrs()
    got = [c for cidrs in seen.values() for c in cidrs]
    if len(got) != prefixes:
        return False
    assert all(ipaddress.IPv4Network(c).prefixlen == 28 for c in got)
    assert seen == agent.ec2_cidrs(), "ipamd's datastore and EC2 disagree"
    return True


def test_warm_eni_target_default_keeps_one_whole_eni_free(
    node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent()
    # A fresh node: the primary ENI's 9 free addresses are one ENI's worth, so nothing else is attached.
    wait_for(lambda: settled(agent, enis=1, total_ips=IPS_PER_ENI), what="the primary ENI filled")

    agent.add_ok("p0")
    # 8 free < one ENI's worth: a second ENI is attached, full.
    wait_for(lambda: settled(agent, enis=2, total_ips=2 * IPS_PER_ENI), what="a second ENI")
    second = next(e for e in agent.ec2_enis() if e != node.instance.primary_eni_id)
    assert agent.enis()["ENIs"][second]["RouteTableID"] == 2, "device 1 uses route table 2"
    described = agent.ec2_enis()[second]
    assert described["Attachment"]["DeleteOnTermination"] is True
    assert described["Description"] == f"aws-K8S-{node.instance.instance_id}"
    tags = {t["Key"]: t["Value"] for t in described.get("TagSet", [])}
    assert tags["node.k8s.amazonaws.com/instance_id"] == node.instance.instance_id

    assert agent.delete("p0").Success
    # Two whole ENIs free: after the IP cooldown and the ENI's minimum age the extra one is detached+deleted.
    wait_for(lambda: settled(agent, enis=1, total_ips=IPS_PER_ENI), what="the extra ENI freed")
    assert second not in agent.ec2_enis()


def test_warm_ip_and_minimum_ip_targets(
    make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(WARM_IP_TARGET="2", MINIMUM_IP_TARGET="5")
    wait_for(lambda: settled(agent, enis=1, total_ips=5), what="MINIMUM_IP_TARGET addresses")

    for i in range(4):
        agent.add_ok(f"p{i}")
    # 4 assigned + 2 warm = 6 > the minimum of 5.
    wait_for(lambda: settled(agent, enis=1, total_ips=6), what="WARM_IP_TARGET above 4 pods")
    assert agent.enis()["AssignedIPs"] == 4


def test_prefix_delegation_with_warm_prefix_target(
    make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(ENABLE_PREFIX_DELEGATION="true", WARM_PREFIX_TARGET="1")
    wait_for(lambda: prefixes_settled(agent, prefixes=1), what="one warm /28 prefix")

    ips = {agent.add_ok(f"p{i}") for i in range(3)}
    assert len(ips) == 3
    # The second prefix may already be there (the pool reacts to the first assignment at once).
    prefixes = {ipaddress.IPv4Network(c) for cidrs in agent.introspected_cidrs().values() for c in cidrs}
    assert prefixes and all(p.prefixlen == 28 for p in prefixes), "prefix mode holds only /28s"
    assert all(any(ip in p for p in prefixes) for ip in ips), "pods take addresses of the /28s"
    # The first prefix is in use, so one more is kept entirely free.
    wait_for(lambda: prefixes_settled(agent, prefixes=2), what="a second prefix once the first is used")


def test_demand_grows_then_shrinks_the_pool(
    node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(WARM_IP_TARGET="2")
    wait_for(lambda: settled(agent, enis=1, total_ips=2), what="the warm IPs")

    pods = [f"p{i}" for i in range(12)]
    ips = [agent.add_ok(pod) for pod in pods]
    assert len(set(ips)) == len(ips), "no address is given twice"
    # 12 pods need more than the primary ENI's 9 addresses: a second ENI holds the rest plus 2 warm.
    wait_for(lambda: settled(agent, enis=2, total_ips=14), what="a second ENI for 12 pods")
    assert all(agent.ec2_owns(ip) for ip in ips)

    for pod in pods:
        assert agent.delete(pod).Success
    # After the IP cooldown the unused addresses go back to EC2 and the emptied ENI is freed.
    wait_for(lambda: settled(agent, enis=1, total_ips=2), timeout_s=90, what="the pool to shrink to 2")
    assert set(agent.ec2_enis()) == {node.instance.primary_eni_id}


def test_max_eni_caps_the_pool_and_a_full_node_answers_success_false(
    node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(MAX_ENI="1")
    wait_for(lambda: settled(agent, enis=1, total_ips=IPS_PER_ENI), what="the primary ENI filled")
    ips = {agent.add_ok(f"p{i}") for i in range(IPS_PER_ENI)}
    assert len(ips) == IPS_PER_ENI

    reply = agent.add("one-too-many")
    assert reply.Success is False and not reply.IPAllocationMetadata
    assert set(agent.ec2_enis()) == {node.instance.primary_eni_id}, "MAX_ENI=1: no second ENI"
    assert "no address" in agent.log_tail(200)


def test_provisioning_disabled_uses_only_what_ec2_already_has(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    cluster.cloud.ec2_client().assign_private_ip_addresses(
        NetworkInterfaceId=node.instance.primary_eni_id, SecondaryPrivateIpAddressCount=3
    )
    agent = make_agent(DISABLE_NETWORK_RESOURCE_PROVISIONING="true")
    wait_for(lambda: settled(agent, enis=1, total_ips=3), what="the three existing addresses")
    ips = {agent.add_ok(f"p{i}") for i in range(3)}
    assert len(ips) == 3
    assert agent.add("p3").Success is False
    assert agent.introspect("/v1/pool")["state"] == "provisioning_disabled"
    assert len(agent.ec2_enis()) == 1 and sum(len(c) for c in agent.ec2_cidrs().values()) == 3
