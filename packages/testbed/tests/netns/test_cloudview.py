"""The datapath follows EC2 without calling EC2: with a Cluster running, the call log holds exactly the calls
a client made, while links and VPC routes still track every attach, assign, unassign and detach."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.cloudview import Ec2CloudView


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(ClusterConfig(kube=False))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _vpc_routes(cluster: Cluster) -> str:
    return ns.exec_in_netns(cluster.datapath.router.vpc_netns, ["ip", "route"])


def test_datapath_follows_boto3_changes_with_only_the_clients_calls_in_the_call_log(cluster: Cluster) -> None:
    node = cluster.add_node(instance_type="m5.large")
    before = len(cluster.cloud.call_log)
    ec2 = cluster.cloud.ec2_client()

    # A subnet the datapath has not seen yet: plugging the ENI needs its CIDR.
    other_subnet = next(s for s in cluster.cloud.subnet_ids if s != node.instance.subnet_id)
    eni = ec2.create_network_interface(SubnetId=other_subnet, Groups=[cluster.cloud.security_group_id])[
        "NetworkInterface"
    ]
    eni_id = eni["NetworkInterfaceId"]
    attachment_id = ec2.attach_network_interface(
        NetworkInterfaceId=eni_id, InstanceId=node.instance.instance_id, DeviceIndex=1
    )["AttachmentId"]
    assert node.network.links()["eth1"] == eni["MacAddress"]

    assigned = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni_id, SecondaryPrivateIpAddressCount=2)
    ips = [a["PrivateIpAddress"] for a in assigned["AssignedPrivateIpAddresses"]]
    routes = _vpc_routes(cluster)
    assert all(f"{ip} via {eni['PrivateIpAddress']}" in routes for ip in ips)
    ec2.assign_private_ip_addresses(NetworkInterfaceId=eni_id, Ipv4PrefixCount=1)
    prefix = cluster.datapath.router.routed(eni_id) - {ipaddress.IPv4Network(f"{ip}/32") for ip in ips}
    assert len(prefix) == 1 and next(iter(prefix)).prefixlen == 28

    ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni_id, PrivateIpAddresses=[ips[0]])
    assert f"{ips[0]} " not in _vpc_routes(cluster)
    ec2.detach_network_interface(AttachmentId=attachment_id)
    assert "eth1" not in node.network.links()

    made = [record.action for record in cluster.cloud.call_log[before:]]
    assert made == [
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "AssignPrivateIpAddresses",
        "AssignPrivateIpAddresses",
        "UnassignPrivateIpAddresses",
        "DetachNetworkInterface",
    ]


def test_cloud_view_reads_the_state_without_api_calls(cluster: Cluster) -> None:
    node = cluster.add_node()
    view = Ec2CloudView(cluster.cloud)
    before = len(cluster.cloud.call_log)

    (attached,) = view.instance_enis(node.instance.instance_id)
    primary, _, _, subnet_id = view.eni_addresses(attached.eni_id)

    assert (attached.eni_id, attached.mac) == (node.instance.primary_eni_id, node.instance.primary_mac)
    assert (attached.device_index, attached.network_card) == (0, 0)
    assert primary == node.instance.primary_ip and subnet_id == node.instance.subnet_id
    assert view.subnet_cidr(subnet_id) == node.instance.subnet_cidr
    assert len(cluster.cloud.call_log) == before
