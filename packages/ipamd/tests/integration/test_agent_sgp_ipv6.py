"""Security groups for pods in an IPv6 cluster, with the real aws-k8s-agent, the aws-cni and egress-cni shims,
the testbed's API server, EC2 (dual-stack subnet that assigns IPv6 on creation) and VPC datapath, and the
VPC resource controller stand-in: a pod a SecurityGroupPolicy selects gets its branch ENI's IPv6 address on
its VLAN, real IPv6 packets reach it from a pod and the VPC host, its groups decide which IPv6 flows pass
(rules added and revoked while it runs), it keeps IPv4 egress through egress-cni, its DEL leaves nothing, and
a kill -9 of ipamd keeps it.

sg-db (the db pods' group) admits ICMPv6 from members of the node group (the other pods: addresses of the
nodes' /80 prefixes) and TCP 5432 from the VPC host's address only; like every new group in a VPC with an IPv6
block it sends anything anywhere (0.0.0.0/0 and ::/0).
"""

from __future__ import annotations

import ipaddress
import json
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo
from vpccni.testbed.kube import PODS
from vpccni.testbed.modes import IPV6_CLUSTER_ENV, dual_stack
from vpccni.testbed.noderunner import NodeRunner, Pod
from vpccni.testbed.vpcrc import ControllerConfig

if TYPE_CHECKING:
    from conftest import Agent

ENV = {**IPV6_CLUSTER_ENV, "ENABLE_POD_ENI": "true", "VPCCNI_POD_ENI_WAIT": "8"}
ANNOTATION = "vpc.amazonaws.com/pod-eni"
PORT = 5432
EVERYWHERE6 = [{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(
        ClusterConfig(
            cloud=dual_stack(), vpc_resource_controller=ControllerConfig(cooldown_s=1.0, resync_s=2)
        )
    )
    try:
        c.start()
        ec2 = c.cloud.ec2_client()
        group = ec2.create_security_group(GroupName="db", Description="db", VpcId=c.cloud.vpc_id)["GroupId"]
        ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {"IpProtocol": "58", "FromPort": -1, "ToPort": -1,
                 "UserIdGroupPairs": [{"GroupId": c.cloud.security_group_id}]},
                {"IpProtocol": "tcp", "FromPort": PORT, "ToPort": PORT,
                 "Ipv6Ranges": [{"CidrIpv6": f"{c.vpc_host_ip6}/128"}]},
            ],
        )  # fmt: skip
        c.create_security_group_policy("db", labels={"app": "db"}, group_ids=[group])
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def sg_db(cluster: Cluster) -> str:
    (group,) = cluster.cloud.ec2_client().describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["db"]}]
    )["SecurityGroups"]
    return str(group["GroupId"])


def _agent(make_agent: Callable[..., Agent], wait_for: Callable[..., Any], **env: str) -> Agent:
    agent = make_agent(**{**ENV, **env})
    wait_for(lambda: agent.metric("vpccni_trunk_eni_attached") == 1, what="ipamd to find its trunk ENI")
    return agent


def _run(agent: Agent, cluster: Cluster, node: Node, name: str, app: str) -> tuple[Pod, dict[str, Any]]:
    """The pod object (through the webhook), its sandbox, and the conflist's chain (aws-cni, egress-cni)."""
    obj = cluster.create_pod(node, namespace="default", name=name, labels={"app": app})
    pod = agent.create_pod(namespace="default", name=name, uid=obj["metadata"]["uid"])
    outcome = NodeRunner.add(agent, pod)
    assert outcome.ok, outcome.error
    return pod, outcome.document


def _ip6(result: dict[str, Any]) -> ipaddress.IPv6Address:
    (v6,) = [ip for ip in result["ips"] if ip["version"] == "6"]
    return ipaddress.IPv6Interface(v6["address"]).ip


def _annotation(cluster: Cluster, name: str) -> dict[str, Any]:
    assert cluster.kube is not None
    pod = cluster.kube.store.get(PODS, name, "default")
    return dict(json.loads(pod["metadata"]["annotations"][ANNOTATION])[0])


def _vlan_links(node: Node) -> set[str]:
    return {name for name in node.network.links() if name.startswith("vlan.eth.")}


def _mentions(node: Node, ip: ipaddress.IPv6Address) -> list[str]:
    """Where the node's IPv6 routes (every table) and rules still name the address."""
    found = []
    for listing in (["route", "show", "table", "all"], ["rule"]):
        text = ns.exec_in_netns(node.netns, ["ip", "-6", *listing])
        found += [line for line in text.splitlines() if str(ip) in line.replace("/", " ").split()]
    return found


@pytest.mark.parametrize("mode", ["strict", "standard"])
def test_a_branch_pod_gets_its_branch_enis_ipv6_and_real_packets_reach_it(
    cluster: Cluster,
    node: Node,
    make_agent: Callable[..., Agent],
    wait_for: Callable[..., Any],
    mode: str,
) -> None:
    agent = _agent(make_agent, wait_for, POD_SECURITY_GROUP_ENFORCING_MODE=mode)
    db, db_result = _run(agent, cluster, node, f"db-{mode}", "db")
    web, web_result = _run(agent, cluster, node, f"web-{mode}", "web")

    annotation = _annotation(cluster, f"db-{mode}")
    subnet = ipaddress.IPv6Network(annotation["subnetV6Cidr"])
    ip = _ip6(db_result)
    assert str(ip) == annotation["ipv6Addr"] and ip in subnet  # the branch ENI's own address, from EC2
    (eni,) = cluster.cloud.ec2_client().describe_network_interfaces(
        NetworkInterfaceIds=[annotation["eniId"]]
    )["NetworkInterfaces"]
    assert [a["Ipv6Address"] for a in eni["Ipv6Addresses"]] == [str(ip)]
    assert f"vlan.eth.{annotation['vlanId']}" in _vlan_links(node)
    assert any(
        i.get("mac") == str(annotation["vlanId"]) for i in db_result["interfaces"]
    )  # DEL without ipamd
    routes = ns.exec_in_netns(db.netns, ["ip", "-6", "route", "show", "default"])
    assert routes.split()[:3] == ["default", "via", "fe80::1"]
    table = ns.exec_in_netns(
        node.netns, ["ip", "-6", "route", "show", "table", str(annotation["vlanId"] + 100)]
    )
    assert "default via fe80:ec2::1 dev vlan.eth." in table  # upstream's GetIPv6Gateway
    rules6 = ns.exec_in_netns(node.netns, ["ip", "-6", "rule"])
    if mode == "strict":  # as upstream: the IPv6 local rule below the VLAN rules, NDP with EC2's router local
        assert "20:\tfrom all lookup local" in rules6
        assert "0:\tfrom fe80:ec2::1 ipproto ipv6-icmp lookup local" in rules6
    pods = {p["name"]: p for p in agent.introspect("/v1/pods")}
    assert pods[f"db-{mode}"]["vlanId"] == annotation["vlanId"] and pods[f"db-{mode}"]["ip"] == str(ip)

    web_ip = _ip6(web_result)
    assert ping(web.netns, ip), "an ordinary pod to the branch pod"
    assert ping(db.netns, web_ip), "the branch pod to an ordinary pod"
    vpc_host = cluster.vpc_host_ip6
    assert vpc_host is not None
    assert ping(db.netns, vpc_host), "the branch pod to a VPC host"
    with EchoServer(netns=db.netns, ip=ip, port=PORT) as server:
        # From outside the node: only the VPC can deliver it, through the trunk on the branch's VLAN.
        assert tcp_echo(cluster.datapath.router.vpc_host_netns, ip, server.port) == str(vpc_host)
    # IPv4 egress through egress-cni, as for every pod of an IPv6 cluster (upstream's egress-cni does not
    # tell branch pods apart).
    with EchoServer(netns=cluster.datapath.router.internet_netns, ip=cluster.internet_ip) as server:
        assert tcp_echo(db.netns, cluster.internet_ip, server.port) is not None

    for pod in (db, web):
        deleted = NodeRunner.delete(agent, pod)
        assert deleted.ok, deleted.error
        agent.remove_pod(pod)
        cluster.delete_pod("default", pod.name)
    assert not _vlan_links(node)
    assert not _mentions(node, ip) and not _mentions(node, web_ip)
    assert not [
        r for r in ns.exec_in_netns(node.netns, ["ip", "-6", "rule"]).splitlines() if r.startswith("10:")
    ]
    wait_for(lambda: not cluster.datapath.router.branches(), what="the controller to delete the branch ENI")


def test_the_branch_enis_groups_decide_ipv6_flows_on_real_packets(
    cluster: Cluster,
    node: Node,
    sg_db: str,
    make_agent: Callable[..., Agent],
    wait_for: Callable[..., Any],
) -> None:
    agent = _agent(make_agent, wait_for)
    db, db_result = _run(agent, cluster, node, "db-sg", "db")
    web, web_result = _run(agent, cluster, node, "web-sg", "web")
    ip, web_ip, vpc_host = _ip6(db_result), _ip6(web_result), cluster.vpc_host_ip6
    assert vpc_host is not None
    annotation = _annotation(cluster, "db-sg")
    eni, vlan_link = annotation["eniId"], f"vlan.eth.{annotation['vlanId']}"
    ec2, router = cluster.cloud.ec2_client(), cluster.datapath.router
    from_nodes = [{"IpProtocol": "tcp", "FromPort": PORT, "ToPort": PORT,
                   "UserIdGroupPairs": [{"GroupId": cluster.cloud.security_group_id}]}]  # fmt: skip
    try:
        with EchoServer(netns=db.netns, ip=ip, port=PORT):
            assert ping(web.netns, ip), "ICMPv6 from a member of the node group is admitted"
            before = router.dropped_by_security(eni, "in")
            assert tcp_echo(web.netns, ip, PORT, timeout=1.5) is None, "no TCP rule for the node group"
            assert router.dropped_by_security(eni, "in") > before, "dropped by the branch ENI's groups"
            assert tcp_echo(router.vpc_host_netns, ip, PORT) == str(vpc_host), "its /128 is admitted"
            ec2.authorize_security_group_ingress(GroupId=sg_db, IpPermissions=from_nodes)
            assert tcp_echo(web.netns, ip, PORT) == str(web_ip), "admitted once the rule is added"
            ec2.revoke_security_group_ingress(GroupId=sg_db, IpPermissions=from_nodes)
            assert tcp_echo(web.netns, ip, PORT, timeout=1.5) is None, "refused again once it is revoked"

        ec2.revoke_security_group_egress(GroupId=sg_db, IpPermissions=EVERYWHERE6)
        try:
            # EC2 never filters neighbour discovery with its router: with the neighbour forgotten, the node
            # resolves fe80:ec2::1 on the branch's VLAN again for db's packet, which its groups then drop.
            ns.exec_in_netns(node.netns, ["ip", "-6", "neigh", "flush", "dev", vlan_link])
            assert "fe80:ec2::1" not in ns.exec_in_netns(
                node.netns, ["ip", "-6", "neigh", "show", "dev", vlan_link]
            )
            assert not ping(db.netns, vpc_host, timeout=1), "no IPv6 egress rule left"
            assert router.dropped_by_security(eni, "out") > 0
            neighbours = ns.exec_in_netns(node.netns, ["ip", "-6", "neigh", "show", "dev", vlan_link])
            assert "fe80:ec2::1 lladdr" in neighbours, neighbours
            # Its IPv4 egress leaves through the node's ENI (egress-cni), not the branch ENI: untouched.
            with EchoServer(netns=router.internet_netns, ip=cluster.internet_ip) as server:
                assert tcp_echo(db.netns, cluster.internet_ip, server.port) is not None
        finally:
            ec2.authorize_security_group_egress(GroupId=sg_db, IpPermissions=EVERYWHERE6)
        assert ping(db.netns, vpc_host), "IPv6 egress back with its ::/0 rule"
    finally:
        for pod in (db, web):
            assert NodeRunner.delete(agent, pod).ok
            agent.remove_pod(pod)
            cluster.delete_pod("default", pod.name)


def test_a_killed_agent_keeps_its_ipv6_branch_pods_and_their_del_leaves_nothing(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = _agent(make_agent, wait_for)
    kept, kept_result = _run(agent, cluster, node, "db-kept", "db")
    gone, _ = _run(agent, cluster, node, "db-gone", "db")
    peer, peer_result = _run(agent, cluster, node, "web-peer", "web")
    agent.stop(signal.SIGKILL)
    agent.remove_pod(gone)  # its sandbox goes while ipamd is down (no DEL at all)

    agent.start()
    wait_for(lambda: "db-kept" in {p["name"] for p in agent.introspect("/v1/pods")}, what="db-kept restored")
    names = {p["name"] for p in agent.introspect("/v1/pods")}
    assert "db-gone" not in names
    kept_vlan = _annotation(cluster, "db-kept")["vlanId"]
    assert _vlan_links(node) == {f"vlan.eth.{kept_vlan}"}  # db-gone's VLAN link went with it
    assert agent.check(kept).ok, "its wiring is untouched by the restart"
    ip = _ip6(kept_result)
    assert ping(peer.netns, ip), "the restored branch pod still takes real packets"

    for pod in (kept, peer):
        assert NodeRunner.delete(agent, pod).ok
        agent.remove_pod(pod)
    assert not _vlan_links(node) and not _mentions(node, ip) and not _mentions(node, _ip6(peer_result))
    for name in ("db-kept", "db-gone", "web-peer"):
        cluster.delete_pod("default", name)
