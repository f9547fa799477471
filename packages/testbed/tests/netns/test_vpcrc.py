"""The VPC resource controller stand-in against the testbed's API server and EC2: a trunk for a node that asks
for security groups for pods, a branch ENI per selected pod (annotated, associated under a VLAN, plugged into
the VPC), nothing for other pods, and the branch ENI gone after its pod, once cooled down."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kubernetes import client
from vpccni.k8sapi.names import POD_ENI_ANNOTATION, POD_ENI_RESOURCE
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.kube import CNINODES, NODES, PODS, SECURITYGROUPPOLICIES
from vpccni.testbed.polling import eventually
from vpccni.testbed.vpcrc import ControllerConfig


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(ClusterConfig(vpc_resource_controller=ControllerConfig(cooldown_s=0.5, resync_s=2)))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def node(cluster: Cluster) -> Node:
    node = cluster.add_node(instance_type="m5.large")
    assert cluster.kube is not None
    # What ipamd does with ENABLE_POD_ENI while an ENI slot is free.
    cluster.kube.store.create(
        CNINODES,
        {"metadata": {"name": node.k8s_node_name}, "spec": {"features": [{"name": "SecurityGroupsForPods"}]}},
    )
    return node


@pytest.fixture(scope="module")
def group(cluster: Cluster) -> str:
    ec2 = cluster.cloud.ec2_client()
    sg = str(
        ec2.create_security_group(GroupName="db", Description="db pods", VpcId=cluster.cloud.vpc_id)[
            "GroupId"
        ]
    )
    assert cluster.kube is not None
    cluster.kube.store.create(
        SECURITYGROUPPOLICIES,
        {
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "securityGroups": {"groupIds": [sg]}},
        },
    )
    return sg


def _pod(cluster: Cluster, name: str) -> dict[str, Any]:
    assert cluster.kube is not None
    return cluster.kube.store.get(PODS, name, "default")


def _annotation(cluster: Cluster, name: str) -> dict[str, Any] | None:
    text = (_pod(cluster, name)["metadata"].get("annotations") or {}).get(POD_ENI_ANNOTATION)
    return json.loads(text)[0] if text else None


def test_a_node_asking_for_the_feature_gets_a_trunk_and_branch_capacity(cluster: Cluster, node: Node) -> None:
    assert cluster.vpcrc is not None and cluster.kube is not None
    trunk = eventually(
        lambda: cluster.vpcrc.trunk_of(node.k8s_node_name) if cluster.vpcrc else None,
    )
    ec2 = cluster.cloud.ec2_client()
    described = ec2.describe_network_interfaces(NetworkInterfaceIds=[trunk.eni_id])["NetworkInterfaces"][0]
    assert described["InterfaceType"] == "trunk" and described["Description"] == "trunk-eni"
    assert described["Attachment"]["InstanceId"] == node.instance.instance_id
    assert described["Attachment"]["DeviceIndex"] == 1
    kube = cluster.kube

    def advertised() -> dict[str, Any] | None:
        k8s_node = kube.store.get(NODES, node.k8s_node_name)
        return k8s_node if POD_ENI_RESOURCE in k8s_node["status"]["capacity"] else None

    k8s_node = eventually(advertised)
    assert k8s_node["status"]["capacity"][POD_ENI_RESOURCE] == "9"  # m5.large's branch limit
    assert k8s_node["metadata"]["labels"]["vpc.amazonaws.com/has-trunk-attached"] == "true"
    assert trunk.eni_id in {p.eni_id for p in cluster.datapath.router.plugged()}


def test_a_selected_pod_gets_a_branch_eni_with_the_policys_groups(
    cluster: Cluster, node: Node, group: str
) -> None:
    assert cluster.kube is not None and cluster.vpcrc is not None
    eventually(
        lambda: cluster.vpcrc.trunk_of(node.k8s_node_name) if cluster.vpcrc else None,
    )
    # Through the API (a POST, as kubectl would), so the webhook runs.
    core = client.CoreV1Api(client.ApiClient(client.Configuration(host=cluster.kube.url)))
    manifest: Any = {
        "metadata": {"name": "db-1", "labels": {"app": "db"}},
        "spec": {"nodeName": node.k8s_node_name, "containers": [{"name": "db", "image": "pause"}]},
    }
    core.create_namespaced_pod("default", manifest)
    web = cluster.create_pod(node, namespace="default", name="web-1", labels={"app": "web"})
    limits = _pod(cluster, "db-1")["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {POD_ENI_RESOURCE: "1"}
    assert "resources" not in web["spec"]["containers"][0]

    entry = eventually(lambda: _annotation(cluster, "db-1"))
    assert entry["vlanId"] == 1 and entry["subnetCidr"] == str(node.instance.subnet_cidr)
    ec2 = cluster.cloud.ec2_client()
    branch = ec2.describe_network_interfaces(NetworkInterfaceIds=[entry["eniId"]])["NetworkInterfaces"][0]
    assert branch["InterfaceType"] == "branch" and [g["GroupId"] for g in branch["Groups"]] == [group]
    assert (branch["MacAddress"], branch["PrivateIpAddress"]) == (entry["ifAddress"], entry["privateIp"])
    (association,) = ec2.describe_trunk_interface_associations(
        Filters=[{"Name": "trunk-interface-association.branch-interface-id", "Values": [entry["eniId"]]}]
    )["InterfaceAssociations"]
    assert association["VlanId"] == 1 and association["AssociationId"] == entry["associationID"]
    assert entry["eniId"] in {p.eni_id for p in cluster.datapath.router.branches()}
    time.sleep(0.5)
    assert _annotation(cluster, "web-1") is None


def test_a_deleted_pods_branch_eni_goes_after_the_cooldown_and_its_vlan_is_reused(
    cluster: Cluster, node: Node, group: str
) -> None:
    assert cluster.vpcrc is not None
    cluster.create_pod(node, namespace="default", name="db-2", labels={"app": "db"})
    entry = eventually(lambda: _annotation(cluster, "db-2"))
    cluster.delete_pod("default", "db-2")
    ec2 = cluster.cloud.ec2_client()

    def gone() -> bool:
        try:
            ec2.describe_network_interfaces(NetworkInterfaceIds=[entry["eniId"]])
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "InvalidNetworkInterfaceID.NotFound"
        return False

    eventually(gone)
    assert entry["eniId"] not in {p.eni_id for p in cluster.datapath.router.branches()}
    cluster.create_pod(node, namespace="default", name="db-3", labels={"app": "db"})
    assert eventually(lambda: _annotation(cluster, "db-3"))["vlanId"] == entry["vlanId"]
