"""Security groups for pods on real packets: branch ENIs made and associated through boto3, wired on the node
by the PRODUCT's networkutils (VLAN links in both enforcing modes), and the VPC delivering VLAN-tagged frames
to them and enforcing their security groups statefully, group references included, while rules change.

One cluster per module. Node 1 has a trunk (eth1) with two branch pods: `web` (group sg-web, strict mode)
and `client` (group sg-client, standard mode). Node 2 has a plain pod on a secondary address of its eth1
(the node group, which admits the whole VPC). sg-web admits TCP 8080 and ICMP from members of sg-client only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from vpccni.networkutils.commands import ToolRunner
from vpccni.networkutils.config import HostNetworkConfig
from vpccni.networkutils.eni import EniNetwork, LinkRetry, setup_eni_network
from vpccni.networkutils.host import HostNetwork
from vpccni.networkutils.iptables import CommandIptables
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.netlink import Netlink
from vpccni.networkutils.netns import ThreadNetnsNetlink
from vpccni.networkutils.nft import CommandNft
from vpccni.networkutils.pod import PodInterface, PodWiring
from vpccni.networkutils.tables import route_table_for_eni, route_table_for_vlan
from vpccni.networkutils.vlan import BranchPodInterface, BranchPodWiring, EnforcingMode
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo

IP = ipaddress.IPv4Address
T = TypeVar("T")
WEB_PORT, OTHER_PORT = 8080, 9090


@dataclass(frozen=True, kw_only=True)
class Pod:
    netns: str
    ip: IP
    eni_id: str  # the branch ENI, or the ENI holding the address


@dataclass(frozen=True, kw_only=True)
class Topology:
    cluster: Cluster
    ec2: Any
    sg_web: str
    sg_client: str
    node1: Node
    trunk: tuple[str, str]  # (ENI id, link on node 1)
    web: Pod
    client: Pod
    other: Pod


def _in(netns_path: str, fn: Callable[[Netlink], T]) -> T:
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return ThreadNetnsNetlink().run(fd, fn)
    finally:
        os.close(fd)


def _setup_host(node: Node, cluster: Cluster) -> None:
    runner = ToolRunner(netns=node.netns)
    host = HostNetworkConfig(
        node_ip=node.instance.primary_ip,
        primary_mac=node.instance.primary_mac,
        vpc_cidrs=(cluster.config.cloud.vpc_cidr,),
    )
    _in(
        node.netns_path,
        lambda nl: HostNetwork(
            netlink=nl, iptables=CommandIptables(runner=runner), nft=CommandNft(runner=runner)
        ).apply(host),
    )


def _attach(cluster: Cluster, node: Node, *, kind: str = "interface") -> tuple[str, str]:
    """An ENI attached at device 1 and set up as ipamd sets it up; (ENI id, link)."""
    ec2 = cluster.cloud.ec2_client()
    eni = ec2.create_network_interface(
        SubnetId=node.instance.subnet_id, Groups=[cluster.cloud.security_group_id], InterfaceType=kind
    )["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=node.instance.instance_id, DeviceIndex=1
    )
    network = EniNetwork(
        mac=eni["MacAddress"],
        primary_ip=IP(eni["PrivateIpAddress"]),
        subnet=node.instance.subnet_cidr,
        route_table=route_table_for_eni(1),
        is_trunk=kind == "trunk",
    )
    link = _in(node.netns_path, lambda nl: setup_eni_network(nl, network, retry=LinkRetry(attempts=10)))
    return eni["NetworkInterfaceId"], link


def _pod_netns(cluster: Cluster, made: list[str], name: str) -> tuple[str, int]:
    netns = f"vtb-{cluster.run_id}-{name}-{secrets.token_hex(2)}"
    ns.create_netns(netns)
    made.append(netns)
    return netns, os.open(ns.netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)


def _branch_pod(
    topo: dict[str, Any], node: Node, trunk: tuple[str, str], *, name: str, group: str, vlan: int,
    mode: EnforcingMode,
) -> Pod:  # fmt: skip
    """What the VPC resource controller and the CNI do for a pod a SecurityGroupPolicy selects."""
    cluster, ec2 = topo["cluster"], topo["ec2"]
    branch = ec2.create_network_interface(
        SubnetId=node.instance.subnet_id, Groups=[group], InterfaceType="branch"
    )["NetworkInterface"]
    ec2.associate_trunk_interface(
        BranchInterfaceId=branch["NetworkInterfaceId"], TrunkInterfaceId=trunk[0], VlanId=vlan
    )
    netns, fd = _pod_netns(cluster, topo["made"], name)
    spec = BranchPodInterface(
        pod=PodInterface(
            host_veth=host_veth_name("default", name),
            ip=IP(branch["PrivateIpAddress"]),
            route_table=route_table_for_vlan(vlan),
        ),
        vlan_id=vlan,
        branch_mac=branch["MacAddress"],
        gateway=next(node.instance.subnet_cidr.hosts()),
        trunk_link=trunk[1],
        mode=mode,
    )
    try:
        _in(
            node.netns_path,
            lambda nl: BranchPodWiring(
                host=nl, pods=PodWiring(host=nl, namespaces=ThreadNetnsNetlink())
            ).wire(fd, spec),
        )
    finally:
        os.close(fd)
    return Pod(netns=netns, ip=spec.pod.ip, eni_id=branch["NetworkInterfaceId"])


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("the netns tier needs root")
    cluster = Cluster(ClusterConfig(kube=False))
    made: list[str] = []
    try:
        cluster.start()
        node1, node2 = cluster.add_node(), cluster.add_node()
        for node in (node1, node2):
            _setup_host(node, cluster)
        ec2 = cluster.cloud.ec2_client()
        vpc = cluster.cloud.vpc_id
        sg_web = ec2.create_security_group(GroupName="web", Description="web pods", VpcId=vpc)["GroupId"]
        sg_client = ec2.create_security_group(GroupName="client", Description="clients", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(
            GroupId=sg_web,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": WEB_PORT, "ToPort": WEB_PORT,
                 "UserIdGroupPairs": [{"GroupId": sg_client}]},
                {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1,
                 "UserIdGroupPairs": [{"GroupId": sg_client}]},
            ],
        )  # fmt: skip
        trunk = _attach(cluster, node1, kind="trunk")
        parts: dict[str, Any] = {"cluster": cluster, "ec2": ec2, "made": made}
        web = _branch_pod(parts, node1, trunk, name="web", group=sg_web, vlan=1, mode=EnforcingMode.STRICT)
        client = _branch_pod(
            parts, node1, trunk, name="client", group=sg_client, vlan=2, mode=EnforcingMode.STANDARD
        )
        eni, _ = _attach(cluster, node2)
        other_ip = IP(
            ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)[
                "AssignedPrivateIpAddresses"
            ][0]["PrivateIpAddress"]
        )
        netns, fd = _pod_netns(cluster, made, "other")
        spec = PodInterface(host_veth=host_veth_name("default", "other"), ip=other_ip, route_table=2)
        try:
            _in(
                node2.netns_path,
                lambda nl: PodWiring(host=nl, namespaces=ThreadNetnsNetlink()).wire(fd, spec),
            )
        finally:
            os.close(fd)
        yield Topology(
            cluster=cluster,
            ec2=ec2,
            sg_web=sg_web,
            sg_client=sg_client,
            node1=node1,
            trunk=trunk,
            web=web,
            client=client,
            other=Pod(netns=netns, ip=other_ip, eni_id=eni),
        )
    finally:
        ns.delete_all(made)
        cluster.stop()


def _reaches(src: Pod, dst: Pod, port: int = WEB_PORT, *, timeout: float = 1.5) -> bool:
    with EchoServer(netns=dst.netns, ip=dst.ip, port=port):
        return tcp_echo(src.netns, dst.ip, port, timeout=timeout) == str(src.ip)


@contextlib.contextmanager
def _open_connection(src: Pod, dst: Pod, port: int) -> Iterator[Callable[[], bool]]:
    """A TCP connection kept open; yields `exchange()`, True while a message still makes the round trip."""
    listener = ns.listen_tcp(dst.netns, str(dst.ip), port)
    client = ns.in_netns(src.netns, lambda: socket.create_connection((str(dst.ip), port), timeout=3))
    server, _ = listener.accept()
    server.settimeout(3)
    client.settimeout(1.5)

    def exchange() -> bool:
        try:
            client.sendall(b"ping")
            server.sendall(server.recv(16))
            return client.recv(16) == b"ping"
        except OSError:
            return False

    try:
        yield exchange
    finally:
        for sock in (client, server, listener):
            sock.close()


def test_the_vpc_delivers_each_branch_pod_on_its_vlan_of_the_trunk(topo: Topology) -> None:
    router = topo.cluster.datapath.router
    vlans = {p.eni_id: p.vlan_id for p in router.branches()}
    assert vlans == {topo.web.eni_id: 1, topo.client.eni_id: 2}
    assert all(p.trunk_eni_id == topo.trunk[0] for p in router.branches())
    routes = ns.exec_in_netns(router.vpc_netns, ["ip", "route"])
    web_link = next(p.link for p in router.branches() if p.eni_id == topo.web.eni_id)
    assert f"{topo.web.ip} dev {web_link}" in routes and f"{topo.client.ip} dev b" in routes
    before = _rx_packets(router.vpc_netns, web_link)
    assert ping(topo.client.netns, topo.web.ip)
    assert _rx_packets(router.vpc_netns, web_link) > before  # the reply came up VLAN 1 of the trunk


def _rx_packets(netns: str, link: str) -> int:
    out = ns.exec_in_netns(netns, ["ip", "-s", "-o", "link", "show", link])
    return int(out.split("RX:")[1].split("\\")[1].split()[1])


def test_a_group_reference_admits_its_members_only(topo: Topology) -> None:
    router = topo.cluster.datapath.router
    assert _reaches(topo.client, topo.web)  # standard-mode client -> strict-mode web, both through the VPC
    assert ping(topo.client.netns, topo.web.ip)
    before = router.dropped_by_security(topo.web.eni_id, "in")
    assert not _reaches(topo.other, topo.web)  # the node group is not sg-client
    assert not ping(topo.other.netns, topo.web.ip, timeout=1)
    assert not _reaches(topo.client, topo.web, OTHER_PORT)  # sg-client, but not the admitted port
    assert router.dropped_by_security(topo.web.eni_id, "in") > before


def test_ingress_of_the_node_group_applies_to_what_branch_pods_send(topo: Topology) -> None:
    # `other` is in the node group, which admits the whole VPC by default: narrowed to its members, it no
    # longer takes web's connections until it admits sg-web.
    ec2, node_group = topo.ec2, topo.cluster.cloud.security_group_id
    vpc_wide = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": str(topo.cluster.config.cloud.vpc_cidr)}]}]
    from_web = [{"IpProtocol": "tcp", "FromPort": WEB_PORT, "ToPort": WEB_PORT,
                 "UserIdGroupPairs": [{"GroupId": topo.sg_web}]}]  # fmt: skip
    assert _reaches(topo.web, topo.other)
    ec2.revoke_security_group_ingress(GroupId=node_group, IpPermissions=vpc_wide)
    try:
        assert not _reaches(topo.web, topo.other)
        ec2.authorize_security_group_ingress(GroupId=node_group, IpPermissions=from_web)
        assert _reaches(topo.web, topo.other)
        ec2.revoke_security_group_ingress(GroupId=node_group, IpPermissions=from_web)
        assert not _reaches(topo.web, topo.other)
    finally:
        ec2.authorize_security_group_ingress(GroupId=node_group, IpPermissions=vpc_wide)


def test_membership_follows_the_enis_groups(topo: Topology) -> None:
    ec2 = topo.ec2
    ec2.modify_network_interface_attribute(NetworkInterfaceId=topo.client.eni_id, Groups=[topo.sg_web])
    try:
        assert not _reaches(topo.client, topo.web)  # no longer a member of sg-client
    finally:
        ec2.modify_network_interface_attribute(NetworkInterfaceId=topo.client.eni_id, Groups=[topo.sg_client])
    assert _reaches(topo.client, topo.web)


def test_revoking_a_rule_keeps_tracked_connections_and_refuses_new_ones(topo: Topology) -> None:
    ec2 = topo.ec2
    permission = {"IpProtocol": "tcp", "FromPort": OTHER_PORT, "ToPort": OTHER_PORT,
                  "UserIdGroupPairs": [{"GroupId": topo.sg_client}]}  # fmt: skip
    ec2.authorize_security_group_ingress(GroupId=topo.sg_web, IpPermissions=[permission])
    with _open_connection(topo.client, topo.web, OTHER_PORT) as exchange:
        assert exchange()
        ec2.revoke_security_group_ingress(GroupId=topo.sg_web, IpPermissions=[permission])
        # As on EC2: the tracked connection goes on, a new one is refused.
        assert exchange() and exchange()
        assert not _reaches(topo.client, topo.web, OTHER_PORT + 1)
        with pytest.raises(OSError):
            ns.in_netns(
                topo.client.netns, lambda: socket.create_connection((str(topo.web.ip), OTHER_PORT), timeout=1)
            )
        assert exchange()


def test_a_disassociated_branch_is_cut_off(topo: Topology) -> None:
    ec2 = topo.ec2
    # A third pod, made and removed here: its sub-port appears and disappears with the association.
    parts: dict[str, Any] = {"cluster": topo.cluster, "ec2": ec2, "made": []}
    extra = _branch_pod(
        parts, topo.node1, topo.trunk, name="extra", group=topo.sg_client, vlan=3, mode=EnforcingMode.STRICT
    )
    try:
        assert _reaches(extra, topo.web)
        association = ec2.describe_trunk_interface_associations(
            Filters=[{"Name": "trunk-interface-association.branch-interface-id", "Values": [extra.eni_id]}]
        )["InterfaceAssociations"][0]["AssociationId"]
        ec2.disassociate_trunk_interface(AssociationId=association)
        assert extra.eni_id not in {p.eni_id for p in topo.cluster.datapath.router.branches()}
        assert not _reaches(extra, topo.web)
        ec2.delete_network_interface(NetworkInterfaceId=extra.eni_id)
    finally:
        ns.delete_all(parts["made"])
