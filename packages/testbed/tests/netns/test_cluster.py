"""Cluster = the real testbed EC2 + the VPC datapath: nodes as namespaces, EC2 changes made through boto3 show
up as links and VPC routes, real packets cross nodes through the VPC namespace."""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from vpccni.awsutils.imds import ImdsConfig, ImdsHttpClient, InstanceMetadata
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import DatapathConfig, VpcLayout
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo

IP = ipaddress.IPv4Address
ENI_TABLE = "2"  # upstream's route table for device index 1 on network card 0


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(ClusterConfig())
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def pod_netns(cluster: Cluster) -> Iterator[str]:
    name = f"vtb-{cluster.run_id}-t{secrets.token_hex(2)}-pod"
    ns.create_netns(name)
    try:
        yield name
    finally:
        ns.delete_netns(name)


def _ip(netns: str, *args: str) -> str:
    return ns.exec_in_netns(netns, ["ip", *args])


def _attach_secondary_eni(cluster: Cluster, node: Node) -> dict[str, Any]:
    ec2 = cluster.cloud.ec2_client()
    eni = ec2.create_network_interface(
        SubnetId=node.instance.subnet_id, Groups=[cluster.cloud.security_group_id]
    )["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=node.instance.instance_id, DeviceIndex=1
    )
    return dict(eni)


def _assign_one(cluster: Cluster, eni_id: str) -> IP:
    resp = cluster.cloud.ec2_client().assign_private_ip_addresses(
        NetworkInterfaceId=eni_id, SecondaryPrivateIpAddressCount=1
    )
    return IP(resp["AssignedPrivateIpAddresses"][0]["PrivateIpAddress"])


def _setup_secondary_eni(node: Node, *, primary: IP) -> None:
    """What ipamd's SetupENINetwork does for eth1 (docs/design/upstream-contract.md §4), by hand."""
    subnet = node.instance.subnet_cidr
    gateway = str(subnet.network_address + 1)
    n = node.netns
    _ip(n, "link", "set", "eth1", "up")
    _ip(n, "addr", "add", f"{primary}/{subnet.prefixlen}", "dev", "eth1")
    _ip(n, "route", "del", str(subnet), "dev", "eth1", "table", "main")
    _ip(n, "route", "add", gateway, "dev", "eth1", "scope", "link", "table", ENI_TABLE)
    _ip(n, "route", "add", "default", "via", gateway, "dev", "eth1", "table", ENI_TABLE)
    _ip(n, "rule", "add", "from", str(primary), "lookup", ENI_TABLE, "priority", "32765")


def _wire_pod(node: Node, pod_netns: str, *, pod_ip: IP, table: str | None = ENI_TABLE) -> None:
    """A minimal version of upstream's pod wiring (upstream-contract.md §3); `table` None: a pod on the
    primary ENI."""
    n, host_veth = node.netns, "enitestpod0"
    _ip(n, "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", pod_netns)
    _ip(n, "link", "set", host_veth, "up")
    host_mac = node.network.links()[host_veth]
    _ip(pod_netns, "link", "set", "lo", "up")
    _ip(pod_netns, "link", "set", "eth0", "up")
    _ip(pod_netns, "addr", "add", f"{pod_ip}/32", "dev", "eth0")
    _ip(pod_netns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    _ip(pod_netns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    _ip(pod_netns, "neigh", "add", "169.254.1.1", "lladdr", host_mac, "dev", "eth0", "nud", "permanent")
    _ip(n, "route", "add", f"{pod_ip}/32", "dev", host_veth, "scope", "link")
    _ip(n, "rule", "add", "to", f"{pod_ip}/32", "lookup", "main", "priority", "512")
    if table is not None:
        _ip(n, "rule", "add", "from", f"{pod_ip}/32", "lookup", table, "priority", "1536")


def test_pod_on_a_secondary_eni_talks_across_nodes_through_the_vpc(cluster: Cluster, pod_netns: str) -> None:
    node1, node2 = cluster.add_node(), cluster.add_node()
    eni = _attach_secondary_eni(cluster, node1)
    assert node1.network.links()["eth1"] == eni["MacAddress"]
    _setup_secondary_eni(node1, primary=IP(eni["PrivateIpAddress"]))
    pod_ip = _assign_one(cluster, eni["NetworkInterfaceId"])
    _wire_pod(node1, pod_netns, pod_ip=pod_ip)

    # pod -> other node: node2 sees the pod's own VPC address (no SNAT inside the VPC).
    with EchoServer(netns=node2.netns, ip=node2.instance.primary_ip) as server:
        assert tcp_echo(pod_netns, node2.instance.primary_ip, server.port) == str(pod_ip)
    # other node -> pod, delivered by the VPC to eth1 of node1.
    with EchoServer(netns=pod_netns, ip=pod_ip) as server:
        assert tcp_echo(node2.netns, pod_ip, server.port) == str(node2.instance.primary_ip)
    assert ping(pod_netns, node2.instance.primary_ip)
    assert ping(pod_netns, cluster.vpc_host_ip)

    # A source the VPC did not assign to eth1 is dropped; the same connection from the pod's IP passes.
    spoofed = IP(int(pod_ip) + 1) if IP(int(pod_ip) + 1) != node1.instance.primary_ip else IP(int(pod_ip) + 2)
    _ip(pod_netns, "addr", "add", f"{spoofed}/32", "dev", "eth0")
    _ip(node1.netns, "rule", "add", "from", f"{spoofed}/32", "lookup", ENI_TABLE, "priority", "1536")
    with EchoServer(netns=node2.netns, ip=node2.instance.primary_ip) as server:
        assert tcp_echo(pod_netns, node2.instance.primary_ip, server.port, source=spoofed, timeout=1) is None
        assert cluster.datapath.router.dropped_by_srccheck(eni["NetworkInterfaceId"]) > 0
        assert tcp_echo(pod_netns, node2.instance.primary_ip, server.port, source=pod_ip) == str(pod_ip)


def test_node_reaches_the_vpc_host_and_the_internet(cluster: Cluster) -> None:
    node = cluster.add_node()
    assert ping(node.netns, cluster.vpc_host_ip)
    with EchoServer(netns=cluster.datapath.router.internet_netns, ip=cluster.internet_ip) as server:
        assert tcp_echo(node.netns, cluster.internet_ip, server.port) == str(node.instance.primary_ip)


def test_detach_removes_the_link_and_unassign_removes_the_vpc_route(cluster: Cluster) -> None:
    node = cluster.add_node()
    ec2 = cluster.cloud.ec2_client()
    eni = _attach_secondary_eni(cluster, node)
    eni_id = eni["NetworkInterfaceId"]
    ip = _assign_one(cluster, eni_id)
    vpc = cluster.datapath.router.vpc_netns
    assert f"{ip} via {eni['PrivateIpAddress']}" in _ip(vpc, "route")

    ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni_id, PrivateIpAddresses=[str(ip)])
    assert f"{ip} " not in _ip(vpc, "route")

    attachment = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
    ec2.detach_network_interface(AttachmentId=attachment["Attachment"]["AttachmentId"])
    assert "eth1" not in node.network.links()
    assert str(eni["PrivateIpAddress"]) not in _ip(vpc, "route")


def test_pod_reaches_the_internet_only_through_the_node_snat(cluster: Cluster, pod_netns: str) -> None:
    node = cluster.add_node()
    pod_ip = _assign_one(cluster, node.instance.primary_eni_id)
    _wire_pod(node, pod_netns, pod_ip=pod_ip, table=None)
    with EchoServer(netns=cluster.datapath.router.internet_netns, ip=cluster.internet_ip) as server:
        # Inside the VPC the pod's address is fine, but it has no public IP: the internet is out of reach.
        assert tcp_echo(pod_netns, cluster.internet_ip, server.port, timeout=1) is None
        # The node SNATs off-VPC traffic to its primary IP (as upstream's AWS-SNAT-CHAIN-0 does).
        script = (
            "table ip podsnat {\n chain post {\n  type nat hook postrouting priority 100;\n"
            f'  ip saddr {pod_ip} ip daddr != {cluster.config.cloud.vpc_cidr} oifname "eth0"'
            f" snat to {node.instance.primary_ip}\n }}\n}}\n"
        )
        ns.exec_in_netns(node.netns, ["nft", "-f", "-"], stdin=script)
        assert tcp_echo(pod_netns, cluster.internet_ip, server.port) == str(node.instance.primary_ip)


def test_prefixes_are_routed_to_their_eni_and_pass_the_source_check(cluster: Cluster) -> None:
    node = cluster.add_node()
    eni_id = node.instance.primary_eni_id
    cluster.cloud.ec2_client().assign_private_ip_addresses(NetworkInterfaceId=eni_id, Ipv4PrefixCount=1)
    _, _, prefixes, _ = cluster.cloud.eni_addresses(eni_id)
    assert len(prefixes) == 1 and prefixes[0].prefixlen == 28
    prefix = prefixes[0]
    assert f"{prefix} via {node.instance.primary_ip}" in _ip(cluster.datapath.router.vpc_netns, "route")

    inside = prefix.network_address + 5
    _ip(node.netns, "addr", "add", f"{inside}/32", "dev", "lo")
    with EchoServer(netns=cluster.datapath.router.vpc_host_netns, ip=cluster.vpc_host_ip) as server:
        assert tcp_echo(node.netns, cluster.vpc_host_ip, server.port, source=inside) == str(inside)


def test_remove_node_deletes_its_namespace_and_vpc_routes(cluster: Cluster) -> None:
    node, other = cluster.add_node(), cluster.add_node()
    cluster.remove_node(node)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert node.netns not in listed and other.netns in listed
    assert f"{node.instance.primary_ip} " not in _ip(cluster.datapath.router.vpc_netns, "route")
    assert ping(other.netns, cluster.vpc_host_ip)


def test_vpc_host_network_must_not_overlap_an_ec2_subnet() -> None:
    layout = VpcLayout(vpc_host=ipaddress.IPv4Interface("10.0.0.200/24"))
    with pytest.raises(ValueError, match="overlaps the EC2 subnet"):
        Cluster(ClusterConfig(datapath=DatapathConfig(layout=layout)))


def test_imds_and_ec2_answer_inside_the_node_namespace(cluster: Cluster) -> None:
    node = cluster.add_node()

    def imds_get(path: str) -> str:
        put = urllib.request.Request(
            f"{node.imds_endpoint_in_ns}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        token = urllib.request.urlopen(put, timeout=5).read().decode()
        get = urllib.request.Request(
            f"{node.imds_endpoint_in_ns}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": token}
        )
        return str(urllib.request.urlopen(get, timeout=5).read().decode())

    assert node.imds_endpoint_in_ns == "http://169.254.169.254"
    assert ns.in_netns(node.netns, lambda: imds_get("instance-id")) == node.instance.instance_id
    assert ns.in_netns(node.netns, lambda: imds_get("mac")) == node.instance.primary_mac

    env = node.env()

    def describe() -> list[str]:
        client = boto3.client(
            "ec2",
            endpoint_url=env["AWS_EC2_ENDPOINT"],
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        reservations = client.describe_instances()["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    assert env["AWS_EC2_ENDPOINT"].startswith("http://169.254.170.2:")
    assert node.instance.instance_id in ns.in_netns(node.netns, describe)


def test_every_eni_imds_lists_is_a_link_with_its_mac_in_the_node(cluster: Cluster) -> None:
    node = cluster.add_node()
    eni = _attach_secondary_eni(cluster, node)
    config = ImdsConfig(endpoint=node.imds_endpoint_in_ns)  # the product's IMDS client, as is

    def read_imds() -> dict[str, int]:
        metadata = InstanceMetadata(ImdsHttpClient(config))
        return {mac: metadata.device_number(mac) for mac in metadata.macs()}

    devices = ns.in_netns(node.netns, read_imds)
    assert devices == {node.instance.primary_mac: 0, eni["MacAddress"]: 1}
    links = node.network.links()
    assert {f"eth{index}": mac for mac, index in devices.items()} == {
        name: mac for name, mac in links.items() if name.startswith("eth")
    }


def test_a_process_started_in_the_node_with_only_env_reaches_ec2_and_imds(cluster: Cluster) -> None:
    node = cluster.add_node()
    script = (
        "import boto3, json, os, urllib.request as u\n"
        "c = boto3.client('ec2', endpoint_url=os.environ['AWS_EC2_ENDPOINT'])\n"
        "ids = [i['InstanceId'] for r in c.describe_instances()['Reservations'] for i in r['Instances']]\n"
        "t = u.urlopen(u.Request(os.environ['AWS_EC2_METADATA_SERVICE_ENDPOINT'] + '/latest/api/token',"
        " method='PUT', headers={'X-aws-ec2-metadata-token-ttl-seconds': '60'})).read().decode()\n"
        "me = u.urlopen(u.Request(os.environ['AWS_EC2_METADATA_SERVICE_ENDPOINT'] +"
        " '/latest/meta-data/instance-id', headers={'X-aws-ec2-metadata-token': t})).read().decode()\n"
        "print(json.dumps({'ids': ids, 'me': me}))\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", node.netns, sys.executable, "-c", script],
        env=node.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    seen = json.loads(out)
    assert seen["me"] == node.instance.instance_id
    assert node.instance.instance_id in seen["ids"]


def test_stop_leaves_no_namespace_and_no_root_link() -> None:
    def root_links() -> set[str]:
        out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        return {line.split(":")[1].strip() for line in out.splitlines()}

    before = root_links()
    cluster = Cluster(ClusterConfig())
    cluster.start()
    try:
        node = cluster.add_node()
        _attach_secondary_eni(cluster, node)
    finally:
        cluster.stop()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"vtb-{cluster.run_id}-" not in namespaces
    assert root_links() == before
