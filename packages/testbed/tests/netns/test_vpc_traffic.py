"""Real traffic on testbed nodes wired by the PRODUCT's networkutils: host setup (`HostNetwork.apply`), ENI
setup (`setup_eni_network`) and pod wiring (`PodWiring`), with EC2 state made through boto3 so the VPC routes
and source/destination-checks exactly what EC2 assigned.

One cluster per module (two nodes, a NAT gateway so any VPC source may reach the internet once the node no
longer SNATs it). Node 1: eth0 (primary ENI, main table), eth1 (table 2), eth2 (table 3); node 2: eth0, eth1.
Tests that change the host config re-apply the default one when they end, so they can share the cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

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
from vpccni.networkutils.tables import MAIN_TABLE, route_table_for_eni
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import DatapathConfig, VpcLayout
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo

IP = ipaddress.IPv4Address
T = TypeVar("T")
NODE_PORT = 30080
POD_PORT = 8080


@dataclass(frozen=True, kw_only=True)
class Eni:
    eni_id: str
    primary_ip: IP
    table: int


@dataclass(frozen=True, kw_only=True)
class Pod:
    node: Node
    netns: str
    spec: PodInterface


@dataclass(frozen=True, kw_only=True)
class Topology:
    cluster: Cluster
    node1: Node
    node2: Node
    eni1: Eni  # node1 eth1
    eni2: Eni  # node1 eth2
    pod_primary: Pod  # node1, an address of the primary ENI
    pod_eth1: Pod  # node1, an address of eth1
    pod_remote: Pod  # node2, an address of its eth1
    pod_netns: list[str]


def _in_node(node: Node, fn: Callable[[Netlink], T]) -> T:
    """`fn` with a netlink handle, on a thread inside the node namespace (sysctls resolve there too)."""
    fd = os.open(node.netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return ThreadNetnsNetlink().run(fd, fn)
    finally:
        os.close(fd)


def _default_config(node: Node, cluster: Cluster) -> HostNetworkConfig:
    return HostNetworkConfig(
        node_ip=node.instance.primary_ip,
        primary_mac=node.instance.primary_mac,
        vpc_cidrs=(cluster.config.cloud.vpc_cidr,),
    )


def _apply_host(node: Node, config: HostNetworkConfig) -> None:
    runner = ToolRunner(netns=node.netns)
    iptables, nft = CommandIptables(runner=runner), CommandNft(runner=runner)
    _in_node(node, lambda nl: HostNetwork(netlink=nl, iptables=iptables, nft=nft).apply(config))


def _attach_eni(cluster: Cluster, node: Node, device_index: int) -> Eni:
    """Create + attach an ENI through EC2, then set it up in the node as ipamd does."""
    ec2 = cluster.cloud.ec2_client()
    created = ec2.create_network_interface(
        SubnetId=node.instance.subnet_id, Groups=[cluster.cloud.security_group_id]
    )["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=created["NetworkInterfaceId"],
        InstanceId=node.instance.instance_id,
        DeviceIndex=device_index,
    )
    eni = Eni(
        eni_id=created["NetworkInterfaceId"],
        primary_ip=IP(created["PrivateIpAddress"]),
        table=route_table_for_eni(device_index),
    )
    network = EniNetwork(
        mac=created["MacAddress"],
        primary_ip=eni.primary_ip,
        subnet=node.instance.subnet_cidr,
        route_table=eni.table,
    )
    _in_node(node, lambda nl: setup_eni_network(nl, network, retry=LinkRetry(attempts=10, interval_s=0.2)))
    return eni


def _assign_one(cluster: Cluster, eni_id: str) -> IP:
    resp = cluster.cloud.ec2_client().assign_private_ip_addresses(
        NetworkInterfaceId=eni_id, SecondaryPrivateIpAddressCount=1
    )
    return IP(resp["AssignedPrivateIpAddresses"][0]["PrivateIpAddress"])


def _wiring(nl: Netlink) -> PodWiring:
    return PodWiring(host=nl, namespaces=ThreadNetnsNetlink())


def _wire(node: Node, netns: str, spec: PodInterface) -> None:
    fd = os.open(ns.netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _in_node(node, lambda nl: _wiring(nl).wire(fd, spec))
    finally:
        os.close(fd)


def _unwire(pod: Pod) -> None:
    fd = os.open(ns.netns_path(pod.netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _in_node(pod.node, lambda nl: _wiring(nl).unwire(pod.spec, fd))
    finally:
        os.close(fd)


def _new_pod(cluster: Cluster, node: Node, made: list[str], *, name: str, ip: IP, table: int) -> Pod:
    netns = f"vtb-{cluster.run_id}-{name}-{secrets.token_hex(2)}"
    ns.create_netns(netns)
    made.append(netns)
    spec = PodInterface(host_veth=host_veth_name("default", name), ip=ip, route_table=table)
    _wire(node, netns, spec)
    return Pod(node=node, netns=netns, spec=spec)


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("the netns tier needs root")
    cluster = Cluster(ClusterConfig(datapath=DatapathConfig(layout=VpcLayout(nat_gateway=True)), kube=False))
    made: list[str] = []
    try:
        cluster.start()
        node1, node2 = cluster.add_node(), cluster.add_node()
        for node in (node1, node2):
            _apply_host(node, _default_config(node, cluster))
        eni1, eni2 = _attach_eni(cluster, node1, 1), _attach_eni(cluster, node1, 2)
        remote_eni = _attach_eni(cluster, node2, 1)
        yield Topology(
            cluster=cluster,
            node1=node1,
            node2=node2,
            eni1=eni1,
            eni2=eni2,
            pod_primary=_new_pod(
                cluster,
                node1,
                made,
                name="web-primary",
                ip=_assign_one(cluster, node1.instance.primary_eni_id),
                table=MAIN_TABLE,
            ),
            pod_eth1=_new_pod(
                cluster, node1, made, name="web-eth1", ip=_assign_one(cluster, eni1.eni_id), table=eni1.table
            ),
            pod_remote=_new_pod(
                cluster,
                node2,
                made,
                name="web-remote",
                ip=_assign_one(cluster, remote_eni.eni_id),
                table=remote_eni.table,
            ),
            pod_netns=made,
        )
    finally:
        ns.delete_all(made)
        cluster.stop()


@contextlib.contextmanager
def _host_config(topo: Topology, **changes: object) -> Iterator[None]:
    """Node 1 runs with a changed host config for the block, then converges back to the default one."""
    default = _default_config(topo.node1, topo.cluster)
    _apply_host(topo.node1, dataclasses.replace(default, **changes))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _apply_host(topo.node1, default)


def _seen(from_netns: str, server_netns: str, server_ip: IP, *, timeout: float = 5.0) -> str | None:
    """The source the far end saw for one TCP echo, or None when the connection failed."""
    with EchoServer(netns=server_netns, ip=server_ip) as server:
        return tcp_echo(from_netns, server_ip, server.port, timeout=timeout)


def _pod_ip(pod: Pod) -> IP:
    return pod.spec.ip


def _vpc_conntrack(topo: Topology, *args: str) -> str:
    """The VPC router's connection table (read-only view of what left the node, before the NAT gateway)."""
    return ns.exec_in_netns(topo.cluster.datapath.router.vpc_netns, ["conntrack", "-L", *args])


def _flush_vpc_conntrack(topo: Topology) -> None:
    ns.exec_in_netns(topo.cluster.datapath.router.vpc_netns, ["conntrack", "-F"])


# 1. pods on the primary ENI and on a secondary ENI, one node and across nodes


def test_pods_on_primary_and_secondary_eni_of_one_node_reach_each_other(topo: Topology) -> None:
    a, b = topo.pod_primary, topo.pod_eth1
    assert ping(a.netns, _pod_ip(b)) and ping(b.netns, _pod_ip(a))
    assert _seen(a.netns, b.netns, _pod_ip(b)) == str(_pod_ip(a))
    assert _seen(b.netns, a.netns, _pod_ip(a)) == str(_pod_ip(b))


def test_pod_on_node1_reaches_a_pod_on_a_secondary_eni_of_node2(topo: Topology) -> None:
    for local in (topo.pod_primary, topo.pod_eth1):
        remote = topo.pod_remote
        assert ping(local.netns, _pod_ip(remote)) and ping(remote.netns, _pod_ip(local))
        # Inside the VPC nobody SNATs: each end sees the other pod's own VPC address.
        assert _seen(local.netns, remote.netns, _pod_ip(remote)) == str(_pod_ip(local))
        assert _seen(remote.netns, local.netns, _pod_ip(local)) == str(_pod_ip(remote))


# 2. + 3. pod -> internet: node SNAT, the exclusion list, external SNAT


def _nat_gateway_ip(topo: Topology) -> str:
    return str(next(topo.cluster.datapath.config.layout.internet_host.network.hosts()))


def _seen_by_internet(topo: Topology, pod: Pod) -> str | None:
    return _seen(pod.netns, topo.cluster.datapath.router.internet_netns, topo.cluster.internet_ip)


def test_pods_reach_the_internet_as_the_node_primary_ip(topo: Topology) -> None:
    node_ip = str(topo.node1.instance.primary_ip)
    for pod in (topo.pod_primary, topo.pod_eth1):  # eth1's pod goes out of eth0 through the connmark
        assert _seen_by_internet(topo, pod) == node_ip


def _assert_left_node_with_pod_ip(topo: Topology, pod: Pod) -> None:
    """The node did not SNAT: the VPC got the pod's own address, and only the NAT gateway translated it."""
    internet = topo.cluster.internet_ip
    _flush_vpc_conntrack(topo)
    seen = _seen_by_internet(topo, pod)
    assert seen == _nat_gateway_ip(topo) and seen != str(topo.node1.instance.primary_ip)
    entries = _vpc_conntrack(topo, "-p", "tcp", "-s", str(_pod_ip(pod)), "-d", str(internet))
    assert f"src={_pod_ip(pod)} dst={internet}" in entries
    assert f"src={internet} dst={_nat_gateway_ip(topo)}" in entries  # the NAT gateway's translation


def test_excluded_snat_cidr_keeps_the_pod_ip(topo: Topology) -> None:
    internet_net = topo.cluster.datapath.config.layout.internet_host.network
    with _host_config(topo, exclude_snat_cidrs=(internet_net,)):
        _assert_left_node_with_pod_ip(topo, topo.pod_primary)
    # Back to the default config: SNAT to the node's IP again.
    assert _seen_by_internet(topo, topo.pod_primary) == str(topo.node1.instance.primary_ip)


def test_external_snat_keeps_the_pod_ip(topo: Topology) -> None:
    with _host_config(topo, external_snat=True):
        for pod in (topo.pod_primary, topo.pod_eth1):  # eth1's pod now leaves through eth1 itself
            _assert_left_node_with_pod_ip(topo, pod)


# 4. NodePort: replies of a DNATed connection leave through eth0 thanks to the mangle connmark


@contextlib.contextmanager
def _node_port(topo: Topology, pod: Pod) -> Iterator[None]:
    rule = [
        "PREROUTING", "-i", "eth0", "-p", "tcp", "--dport", str(NODE_PORT),
        "-j", "DNAT", "--to-destination", f"{_pod_ip(pod)}:{POD_PORT}",
    ]  # fmt: skip
    ns.exec_in_netns(topo.node1.netns, ["iptables", "-t", "nat", "-A", *rule])
    try:
        with EchoServer(netns=pod.netns, ip=_pod_ip(pod), port=POD_PORT):
            yield
    finally:
        ns.exec_in_netns(topo.node1.netns, ["iptables", "-t", "nat", "-D", *rule])


def _node_port_echo(topo: Topology, *, timeout: float = 5.0) -> str | None:
    return tcp_echo(topo.node2.netns, topo.node1.instance.primary_ip, NODE_PORT, timeout=timeout)


def test_node_port_to_a_secondary_eni_pod_replies_through_eth0(topo: Topology) -> None:
    node1 = topo.node1.netns
    with _node_port(topo, topo.pod_eth1):
        ns.exec_in_netns(node1, ["conntrack", "-F"])
        ns.exec_in_netns(node1, ["iptables", "-t", "mangle", "-Z", "PREROUTING"])
        assert _node_port_echo(topo) == str(topo.node2.instance.primary_ip)
        marked = ns.exec_in_netns(
            node1, ["conntrack", "-L", "-p", "tcp", "-m", "0x80", "--orig-port-dst", str(NODE_PORT)]
        )
        assert f"dst={topo.node1.instance.primary_ip}" in marked and f"src={_pod_ip(topo.pod_eth1)}" in marked
        mangle = ns.exec_in_netns(node1, ["iptables", "-t", "mangle", "-L", "PREROUTING", "-v", "-n", "-x"])
        counters = [line.split() for line in mangle.splitlines() if "CONNMARK" in line and "eth0" in line]
        assert counters and int(counters[0][0]) > 0

        # Without the product's NodePort mangle rules the reply follows the pod's from-rule out of eth1, with
        # the node's IP as source after un-DNAT, and the VPC's source/destination check drops it.
        with _host_config(topo, node_port_support=False):
            before = topo.cluster.datapath.router.dropped_by_srccheck(topo.eni1.eni_id)
            assert _node_port_echo(topo, timeout=1.5) is None
            assert topo.cluster.datapath.router.dropped_by_srccheck(topo.eni1.eni_id) > before
        assert _node_port_echo(topo) == str(topo.node2.instance.primary_ip)


# 5. the source/destination check against the product's wiring


def test_pod_wired_to_the_wrong_eni_table_is_dropped_by_the_source_check(topo: Topology) -> None:
    cluster, node = topo.cluster, topo.node1
    ip = _assign_one(cluster, topo.eni2.eni_id)  # an address of eth2 (table 3), wired with eth1's table
    wrong = _new_pod(cluster, node, topo.pod_netns, name="web-wrong", ip=ip, table=topo.eni1.table)
    before = cluster.datapath.router.dropped_by_srccheck(topo.eni1.eni_id)
    vpc_host = cluster.datapath.router.vpc_host_netns
    assert _seen(wrong.netns, vpc_host, cluster.vpc_host_ip, timeout=1.5) is None
    assert not ping(wrong.netns, cluster.vpc_host_ip, timeout=1)
    assert cluster.datapath.router.dropped_by_srccheck(topo.eni1.eni_id) > before

    _unwire(wrong)
    right = dataclasses.replace(wrong.spec, route_table=topo.eni2.table)
    _wire(node, wrong.netns, right)
    assert _seen(wrong.netns, vpc_host, cluster.vpc_host_ip) == str(ip)
    assert ping(wrong.netns, cluster.vpc_host_ip)
