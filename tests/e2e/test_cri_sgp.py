"""Security groups for pods under the real CNI client: containerd's CRI runs pod sandboxes on two nodes
whose aws-k8s-agent has ENABLE_POD_ENI=true; the VPC resource controller stand-in gives each node a trunk and
each pod a SecurityGroupPolicy selects a branch ENI. A branch pod gets its branch ENI's address, and its
security group decides who reaches it, with real packets; removing the sandboxes leaves no VLAN link and the
controller deletes the branch ENIs."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from vpccni.k8sapi.names import POD_ENI_ANNOTATION
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.cri import Containerd, CriClient, PodSpec, podnet
from vpccni.testbed.kube import PODS
from vpccni.testbed.noderunner import NETWORK_NAME, NodeRunner, build_shim
from vpccni.testbed.polling import eventually
from vpccni.testbed.vpcrc import ControllerConfig

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root")
PORT = 5432
AGENT_ENV = {"ENABLE_POD_ENI": "true", "VPCCNI_POD_ENI_WAIT": "10", "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG"}


@dataclass
class Host:
    node: Node
    runner: NodeRunner
    cri: CriClient


@dataclass(frozen=True, kw_only=True)
class Running:
    id: str
    name: str
    ip: ipaddress.IPv4Address
    netns: Path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    config = ClusterConfig(vpc_resource_controller=ControllerConfig(cooldown_s=1.0, resync_s=2))
    with Cluster(config) as c:
        c.add_node()
        c.add_node()
        ec2, vpc = c.cloud.ec2_client(), c.cloud.vpc_id
        groups = {
            n: ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"]
            for n in ("db", "client")
        }
        ec2.authorize_security_group_ingress(
            GroupId=groups["db"],
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": PORT,
                    "ToPort": PORT,
                    "UserIdGroupPairs": [{"GroupId": groups["client"]}],
                }
            ],
        )
        for app, group in groups.items():
            c.create_security_group_policy(app, labels={"app": app}, group_ids=[group])
        yield c


@pytest.fixture(scope="module")
def hosts(cluster: Cluster) -> Iterator[list[Host]]:
    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-sgp-") as tmp, contextlib.ExitStack() as stack:
        shim = build_shim(Path(tmp) / "bin")
        hosts = []
        for node in cluster.nodes:
            runner = NodeRunner(node=node, workdir=Path(tmp) / node.name, shim=shim, env=AGENT_ENV)
            stack.callback(runner.close)
            runner.start()
            containerd = stack.enter_context(
                Containerd(netns_path=node.netns_path, cni_conf_dir=runner.confdir)
            )
            containerd.install_chain(shim)
            containerd.wait_network_ready(network=NETWORK_NAME)
            hosts.append(Host(node=node, runner=runner, cri=stack.enter_context(containerd.client())))
        assert cluster.vpcrc is not None
        for host in hosts:  # the controller attaches a trunk once ipamd asks for one; ipamd then finds it
            eventually(lambda h=host: cluster.vpcrc and cluster.vpcrc.trunk_of(h.node.k8s_node_name))
            eventually(lambda h=host: h.runner.metric("vpccni_trunk_eni_attached") == 1)
        yield hosts


def _run(cluster: Cluster, host: Host, name: str, app: str) -> Running:
    """As kubelet: the pod object exists (the webhook ran), then the runtime is asked for its sandbox."""
    obj = cluster.create_pod(host.node, namespace="default", name=name, labels={"app": app})
    sandbox_id = host.cri.run_pod(PodSpec(name=name, namespace="default", uid=obj["metadata"]["uid"]))
    sandbox = host.cri.status(sandbox_id)
    assert sandbox.ready and isinstance(sandbox.ip, ipaddress.IPv4Address) and sandbox.netns_path is not None
    return Running(id=sandbox_id, name=name, ip=sandbox.ip, netns=sandbox.netns_path)


def _annotation(cluster: Cluster, name: str) -> dict[str, Any]:
    assert cluster.kube is not None
    pod = cluster.kube.store.get(PODS, name, "default")
    return dict(json.loads(pod["metadata"]["annotations"][POD_ENI_ANNOTATION])[0])


def _vlan_links(host: Host) -> list[str]:
    return [name for name in host.node.network.links() if name.startswith("vlan.eth.")]


def test_a_branch_pod_gets_its_branch_eni_and_its_group_decides_who_reaches_it(
    cluster: Cluster, hosts: list[Host]
) -> None:
    node1, node2 = hosts
    db = _run(cluster, node1, "db", "db")
    client = _run(cluster, node2, "client", "client")
    other = _run(cluster, node2, "other", "web")

    entry = _annotation(cluster, "db")
    assert str(db.ip) == entry["privateIp"]
    assert [i.ip for i in podnet.addresses(db.netns)] == [db.ip]
    assert _vlan_links(node1) == [f"vlan.eth.{entry['vlanId']}"]
    pods = {p["name"]: p for p in node1.runner.introspect("/v1/pods")}
    assert pods["db"]["eniId"] == entry["eniId"] and pods["db"]["vlanId"] == entry["vlanId"]

    with podnet.echo_server(db.netns, db.ip, PORT):
        assert podnet.tcp_echo(client.netns, db.ip, PORT) == str(client.ip)  # sg-client is admitted
        assert podnet.tcp_echo(other.netns, db.ip, PORT, timeout=1.5) is None  # the node group is not

    branches = [entry["eniId"], _annotation(cluster, "client")["eniId"]]
    for host, pod in ((node1, db), (node2, client), (node2, other)):
        host.cri.stop_pod(pod.id)
        host.cri.remove_pod(pod.id)
        cluster.delete_pod("default", pod.name)
    assert _vlan_links(node1) == [] and _vlan_links(node2) == []
    ec2 = cluster.cloud.ec2_client()

    def deleted(eni_id: str) -> bool:
        try:
            ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "InvalidNetworkInterfaceID.NotFound"
        return False

    eventually(lambda: all(deleted(e) for e in branches))
