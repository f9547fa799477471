"""Security groups for pods in an IPv6 cluster under the real CNI client: containerd's CRI runs sandboxes on a
testbed node in a dual-stack VPC whose aws-k8s-agent has ENABLE_IPv6 and ENABLE_POD_ENI; the VPC resource
controller stand-in gives the node a trunk and the selected pod a branch ENI.

The sandbox's IP as CRI reports it is the branch ENI's IPv6 address; the VPC host reaches it (only through the
trunk's VLAN) and an ordinary pod of the node reaches it; it has IPv4 egress through egress-cni; removing the
sandboxes leaves no VLAN link, rule or route, and the controller deletes the branch ENI.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from vpccni.k8sapi.names import POD_ENI_ANNOTATION
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.cri import Containerd, CriClient, PodSandbox, PodSpec
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, tcp_echo
from vpccni.testbed.kube import PODS
from vpccni.testbed.modes import IPV6_CLUSTER_ENV, dual_stack
from vpccni.testbed.noderunner import NETWORK_NAME, NodeRunner, build_shim
from vpccni.testbed.polling import eventually
from vpccni.testbed.vpcrc import ControllerConfig

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root")
PORT = 5432
ENV = {**IPV6_CLUSTER_ENV, "ENABLE_POD_ENI": "true", "VPCCNI_POD_ENI_WAIT": "10"}


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Cluster, NodeRunner, CriClient]]:
    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-sgp6-") as tmp, contextlib.ExitStack() as stack:
        config = ClusterConfig(
            cloud=dual_stack(), vpc_resource_controller=ControllerConfig(cooldown_s=1.0, resync_s=2)
        )
        cluster = stack.enter_context(Cluster(config))
        node = cluster.add_node()
        ec2 = cluster.cloud.ec2_client()
        vpc = cluster.cloud.vpc_id
        group = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
        # The VPC enforces the groups on IPv6 packets too: db admits PORT from the VPC host's address and from
        # the node group's members (the ordinary pod's /80 address).
        ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": PORT, "ToPort": PORT,
                 "Ipv6Ranges": [{"CidrIpv6": f"{cluster.vpc_host_ip6}/128"}],
                 "UserIdGroupPairs": [{"GroupId": cluster.cloud.security_group_id}]},
            ],
        )  # fmt: skip
        cluster.create_security_group_policy("db", labels={"app": "db"}, group_ids=[group])
        shim = build_shim(Path(tmp) / "bin")
        runner = NodeRunner(node=node, workdir=Path(tmp) / node.name, shim=shim, env=ENV)
        stack.callback(runner.close)
        runner.start()
        containerd = stack.enter_context(Containerd(netns_path=node.netns_path, cni_conf_dir=runner.confdir))
        containerd.install_chain(shim, runner.chained())
        containerd.wait_network_ready(network=NETWORK_NAME)
        eventually(lambda: runner.metric("vpccni_trunk_eni_attached") == 1)
        yield cluster, runner, stack.enter_context(containerd.client())


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    id: str
    ip: ipaddress.IPv6Address
    netns_path: Path


def _sandbox(cluster: Cluster, cri: CriClient, runner: NodeRunner, name: str, app: str) -> Sandbox:
    """As kubelet: the pod object exists (the webhook ran), then the runtime is asked for its sandbox."""
    obj = cluster.create_pod(runner.node, namespace="default", name=name, labels={"app": app})
    sandbox_id = cri.run_pod(PodSpec(name=name, namespace="default", uid=obj["metadata"]["uid"]))
    status: PodSandbox = cri.status(sandbox_id)
    assert status.ready and isinstance(status.ip, ipaddress.IPv6Address), status
    assert status.netns_path is not None
    return Sandbox(id=sandbox_id, ip=status.ip, netns_path=status.netns_path)


def _vlan_links(runner: NodeRunner) -> list[str]:
    return [name for name in runner.node.network.links() if name.startswith("vlan.eth.")]


def test_an_ipv6_branch_sandbox_gets_its_branch_enis_ipv6_and_leaves_nothing(
    stack: tuple[Cluster, NodeRunner, CriClient],
) -> None:
    cluster, runner, cri = stack
    assert cluster.kube is not None
    db = _sandbox(cluster, cri, runner, "db", "db")
    web = _sandbox(cluster, cri, runner, "web", "web")
    annotation = json.loads(
        cluster.kube.store.get(PODS, "db", "default")["metadata"]["annotations"][POD_ENI_ANNOTATION]
    )[0]
    assert str(db.ip) == annotation["ipv6Addr"]
    assert ipaddress.IPv6Address(annotation["ipv6Addr"]) in ipaddress.IPv6Network(annotation["subnetV6Cidr"])
    assert _vlan_links(runner) == [f"vlan.eth.{annotation['vlanId']}"]

    pid = os.getpid()
    db_ns = ns.alias_netns(db.netns_path, f"vpod-sgp6-db-{pid}")
    web_ns = ns.alias_netns(web.netns_path, f"vpod-sgp6-web-{pid}")
    try:
        router, vpc_host = cluster.datapath.router, cluster.vpc_host_ip6
        assert vpc_host is not None
        with EchoServer(netns=db_ns, ip=db.ip, port=PORT):
            assert tcp_echo(router.vpc_host_netns, db.ip, PORT) == str(vpc_host)
            assert tcp_echo(web_ns, db.ip, PORT) == str(web.ip)
        internet4 = cluster.internet_ip
        with EchoServer(netns=router.internet_netns, ip=internet4) as server:
            assert tcp_echo(db_ns, internet4, server.port) == str(runner.node.instance.primary_ip)
    finally:
        ns.delete_netns(db_ns)
        ns.delete_netns(web_ns)

    for sandbox, name in ((db, "db"), (web, "web")):
        cri.stop_pod(sandbox.id)  # CNI DEL of the chain, in reverse
        cri.remove_pod(sandbox.id)
        cluster.delete_pod("default", name)
    assert _vlan_links(runner) == []
    node_ns = runner.node.netns
    for listing in (["rule"], ["route", "show", "table", "all"]):
        words = ns.exec_in_netns(node_ns, ["ip", "-6", *listing]).replace("/", " ").split()
        assert str(db.ip) not in words and str(web.ip) not in words  # whole addresses, not prefixes of others
    ec2 = cluster.cloud.ec2_client()

    def deleted() -> bool:
        try:
            ec2.describe_network_interfaces(NetworkInterfaceIds=[annotation["eniId"]])
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "InvalidNetworkInterfaceID.NotFound"
        return False

    eventually(deleted)
