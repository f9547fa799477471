"""Security groups for pods with the real aws-k8s-agent, the aws-cni shim, the testbed's API server, EC2 and
VPC datapath, and the VPC resource controller stand-in: the trunk is asked for and kept out of the pool,
branch pods are wired on their VLAN and their security groups decide real traffic, DEL works with ipamd
down, and nothing is left after a restart."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, tcp_echo
from vpccni.testbed.kube import CNINODES, PODS
from vpccni.testbed.noderunner import Pod
from vpccni.testbed.vpcrc import ControllerConfig

if TYPE_CHECKING:
    from conftest import Agent

PORT = 5432
SGP_ENV = {"ENABLE_POD_ENI": "true", "VPCCNI_POD_ENI_WAIT": "8"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(ClusterConfig(vpc_resource_controller=ControllerConfig(cooldown_s=1.0, resync_s=2)))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@dataclass(frozen=True, kw_only=True)
class Groups:
    db: str  # admits PORT from members of `client`
    client: str


@pytest.fixture(scope="module")
def groups(cluster: Cluster) -> Groups:
    ec2 = cluster.cloud.ec2_client()
    vpc = cluster.cloud.vpc_id
    db = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    client = ec2.create_security_group(GroupName="client", Description="client", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=db,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": PORT, "ToPort": PORT, "UserIdGroupPairs": [{"GroupId": client}]}
        ],
    )
    for app, group in (("db", db), ("client", client)):
        cluster.create_security_group_policy(app, labels={"app": app}, group_ids=[group])
    return Groups(db=db, client=client)


def _sgp_agent(make_agent: Callable[..., Agent], wait_for: Callable[..., Any], **env: str) -> Agent:
    agent = make_agent(**{**SGP_ENV, **env})
    wait_for(lambda: agent.metric("vpccni_trunk_eni_attached") == 1, what="ipamd to find its trunk ENI")
    return agent


def _run(agent: Agent, cluster: Cluster, node: Node, name: str, app: str) -> tuple[Pod, dict[str, Any]]:
    """The pod object (through the webhook), its sandbox, and the shim's ADD, as kubelet does."""
    obj = cluster.create_pod(node, namespace="default", name=name, labels={"app": app})
    pod = agent.create_pod(namespace="default", name=name, uid=obj["metadata"]["uid"])
    outcome = agent.cni("ADD", pod)
    assert outcome.ok, outcome.error
    return pod, outcome.document


def _ip(result: dict[str, Any]) -> Any:
    import ipaddress

    return ipaddress.IPv4Interface(result["ips"][0]["address"]).ip


def _vlan_links(node: Node) -> set[str]:
    """The node's `vlan.eth.<id>` links."""
    return {name for name in node.network.links() if name.startswith("vlan.eth.")}


def test_branch_pods_get_their_eni_on_a_vlan_and_their_groups_decide_traffic(
    cluster: Cluster,
    node: Node,
    groups: Groups,
    make_agent: Callable[..., Agent],
    wait_for: Callable[..., Any],
) -> None:
    assert cluster.kube is not None and cluster.vpcrc is not None
    agent = _sgp_agent(make_agent, wait_for)
    cninode = cluster.kube.store.get(CNINODES, node.k8s_node_name)
    assert {"name": "SecurityGroupsForPods"} in cninode["spec"]["features"]
    trunk = cluster.vpcrc.trunk_of(node.k8s_node_name)
    assert trunk is not None
    listed = agent.enis()["ENIs"][trunk.eni_id]  # as upstream: listed as the trunk, with no addresses
    assert listed["IsTrunk"] and not listed["AvailableIPv4Cidrs"]

    db, db_result = _run(agent, cluster, node, "db-1", "db")
    client, _ = _run(agent, cluster, node, "client-1", "client")
    plain, plain_result = _run(agent, cluster, node, "web-1", "web")

    annotation = json.loads(
        cluster.kube.store.get(PODS, "db-1", "default")["metadata"]["annotations"][
            "vpc.amazonaws.com/pod-eni"
        ]
    )[0]
    assert str(_ip(db_result)) == annotation["privateIp"]
    assert f"vlan.eth.{annotation['vlanId']}" in _vlan_links(node)
    # The VLAN id travels in the result (upstream: the dummy interface's mac), for DEL without ipamd.
    assert any(i.get("mac") == str(annotation["vlanId"]) for i in db_result["interfaces"])
    assert not agent.ec2_owns(_ip(db_result))  # a branch address, not the pool's
    assert agent.ec2_owns(_ip(plain_result))

    with EchoServer(netns=db.netns, ip=_ip(db_result), port=PORT):
        assert tcp_echo(client.netns, _ip(db_result), PORT) is not None  # sg-client is admitted
        assert tcp_echo(plain.netns, _ip(db_result), PORT, timeout=1.5) is None  # the node group is not

    pods = {p["name"]: p for p in agent.introspect("/v1/pods")}
    assert pods["db-1"]["vlanId"] == annotation["vlanId"] and pods["web-1"]["vlanId"] == 0
    assert pods["db-1"]["eniId"] == annotation["eniId"]
    assert agent.metric("vpccni_branch_eni_pods") == 2

    for pod in (db, client, plain):
        assert agent.cni("DEL", pod, prev_result=agent.result_of(pod)).ok
        cluster.delete_pod("default", pod.name)
    assert not _vlan_links(node)
    wait_for(lambda: not cluster.datapath.router.branches(), what="the controller to delete the branch ENIs")


def test_del_with_ipamd_down_and_nothing_left_after_a_restart(
    cluster: Cluster,
    node: Node,
    groups: Groups,
    make_agent: Callable[..., Agent],
    wait_for: Callable[..., Any],
) -> None:
    agent = _sgp_agent(make_agent, wait_for)
    kept, kept_result = _run(agent, cluster, node, "db-2", "db")
    deleted, deleted_result = _run(agent, cluster, node, "db-3", "db")
    vanished, _ = _run(agent, cluster, node, "client-2", "client")
    agent.stop(signal.SIGKILL)

    # ipamd is down: the shim queues the DEL (with its prevResult) and reports it done; ipamd finishes it
    # when it starts, before it serves.
    vlan = next(i["mac"] for i in deleted_result["interfaces"] if i.get("mac", "").isdigit())
    outcome = agent.cni("DEL", deleted, prev_result=deleted_result)
    assert outcome.ok, outcome.error
    # A sandbox that disappears while ipamd is down (no DEL at all).
    agent.remove_pod(vanished)

    agent.start()
    wait_for(lambda: {p["name"] for p in agent.introspect("/v1/pods")} >= {"db-2"}, what="db-2 restored")
    names = {p["name"] for p in agent.introspect("/v1/pods")}
    assert "client-2" not in names and "db-3" not in names
    kept_vlan = next(i["mac"] for i in kept_result["interfaces"] if i.get("mac", "").isdigit())
    assert _vlan_links(node) == {f"vlan.eth.{kept_vlan}"}  # db-3's (DEL queued) and client-2's are gone
    assert vlan != kept_vlan
    assert agent.cni("CHECK", kept, prev_result=kept_result).ok
    assert agent.cni("DEL", kept, prev_result=kept_result).ok
    assert not _vlan_links(node)
    rules = ns.exec_in_netns(node.netns, ["ip", "rule"]).splitlines()
    assert not [r for r in rules if r.startswith("10:")]  # upstream's VLAN rule priority
    for table in (101, 102, 103):
        assert not ns.exec_in_netns(node.netns, ["ip", "route", "show", "table", str(table)]).strip()
    for name in ("db-2", "db-3", "client-2"):
        cluster.delete_pod("default", name)


def test_a_pod_asking_for_a_branch_eni_nobody_annotates_fails_with_a_clear_error(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    assert cluster.kube is not None
    agent = _sgp_agent(make_agent, wait_for, VPCCNI_POD_ENI_WAIT="1")
    # It asks for a branch ENI but no policy selects it any more: the controller never annotates it.
    obj = cluster.kube.store.create(
        PODS,
        {
            "metadata": {"name": "orphan", "namespace": "default"},
            "spec": {
                "nodeName": node.k8s_node_name,
                "containers": [{"name": "c", "resources": {"limits": {"vpc.amazonaws.com/pod-eni": "1"}}}],
            },
        },
    )
    pod = agent.create_pod(namespace="default", name="orphan", uid=obj["metadata"]["uid"])
    outcome = agent.cni("ADD", pod)
    assert not outcome.ok
    assert outcome.document["code"] == 11  # try again later: kubelet retries the sandbox
    assert "vpc.amazonaws.com/pod-eni" in outcome.document["msg"] + outcome.document.get("details", "")
    assert not _vlan_links(node)
    cluster.delete_pod("default", "orphan")
