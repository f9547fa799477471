"""Upstream's AddNetwork/DelNetwork for branch-ENI pods (ENABLE_POD_ENI): an upstream aws-cni talking gRPC
to ipamd gets the pod's branch address, VLAN id, branch MAC, subnet gateway and the trunk's ifindex, and
wires the pod itself; ordinary pods still come from the datastore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import grpc
import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.allocator import Allocator
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.grpc.backend import CniBackendServicer, NodeFacts
from vpccni.ipamd.grpc.server import GrpcServer, GrpcServerSettings
from vpccni.ipamd.pool.testing import IdlePool
from vpccni.ipamd.ports import EniRecord
from vpccni.ipamd.sgp.lookup import BranchPodLookup
from vpccni.ipamd.sgp.rpc_branch import BranchRpcLookup
from vpccni.k8sapi import PodCache, PodInfo
from vpccni.k8sapi.names import POD_ENI_ANNOTATION
from vpccni.networkutils.testing import FakeNetwork
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc

VERSION = "v1.19.2-vpccni"
Node = tuple[Any, list[str | None], Allocator]  # the CNIBackend stub, the trunk link's name, the allocator
ANNOTATION = json.dumps(
    [{"eniId": "eni-0b7", "ifAddress": "0a:bb:00:00:00:07", "privateIp": "10.0.16.40", "vlanId": 7,
      "subnetCidr": "10.0.16.0/20", "ipv6Addr": "2600:1f14:a:b100::28",
      "subnetV6Cidr": "2600:1f14:a:b100::/64"}]
)  # fmt: skip


def fields(pod: str) -> dict[str, str]:
    return {
        "K8S_POD_NAME": pod, "K8S_POD_NAMESPACE": "db", "ContainerID": f"c-{pod}", "IfName": "eth0",
        "NetworkName": "aws-cni",
    }  # fmt: skip


@pytest.fixture
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    ipv6 = getattr(request, "param", False)  # an ENABLE_IPv6 node
    pods = PodCache()
    pods.replace_all([], resource_version="1")
    pods.upsert(PodInfo(namespace="db", name="orders", annotations={POD_ENI_ANNOTATION: ANNOTATION},
                        requests_pod_eni=True))  # fmt: skip
    pods.upsert(PodInfo(namespace="db", name="late", requests_pod_eni=True))
    pods.upsert(PodInfo(namespace="db", name="web"))
    _, host = FakeNetwork().add_namespace("host")
    trunk_link = host.add_link("eth1", mac="0a:aa:00:00:00:02", up=True)
    trunk: list[str | None] = [trunk_link.name]
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=FakeClock())
    ds.add_eni(
        EniRecord(eni_id="eni-1", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_cidrs("eni-1", [IPv4Network("10.0.0.21/32")], is_prefix=False)
    allocator = Allocator(datastore=ds, pool=IdlePool(), default_timeout_s=0.1)
    allocator.mark_ready()
    backend = CniBackendServicer(
        allocator=allocator,
        facts=NodeFacts(version=VERSION, use_external_snat=False),
        vpc_cidrs=lambda: (IPv4Network("10.0.0.0/16"),),
        branches=BranchRpcLookup(
            lookup=BranchPodLookup(pods=lambda: pods, ipv6=ipv6), trunk_link=lambda: trunk[0], netlink=host
        ),
    )
    server = GrpcServer(
        settings=GrpcServerSettings(socket_path=tmp_path / "ipamd.sock"),
        register=(lambda s: rpc_pb2_grpc.add_CNIBackendServicer_to_server(backend, s),),
    )
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{server.socket_path}") as channel:
            yield rpc_pb2_grpc.CNIBackendStub(channel), trunk, allocator
    finally:
        server.stop()


def test_a_branch_pod_is_answered_with_its_vlan_and_the_trunk_link(node: Node) -> None:
    stub, _, allocator = node
    reply = stub.AddNetwork(rpc_pb2.AddNetworkRequest(ClientVersion=VERSION, **fields("orders")), timeout=5)
    assert reply.Success
    assert [(m.IPv4Addr, m.DeviceNumber, m.RouteTableId) for m in reply.IPAllocationMetadata] == [
        ("10.0.16.40", -1, -1)
    ]
    assert (reply.PodVlanId, reply.PodENIMAC, reply.PodENISubnetGW) == (7, "0a:bb:00:00:00:07", "10.0.16.1")
    assert reply.ParentIfIndex > 0
    assert allocator.allocations() == ()  # the datastore never hands out a branch ENI's address
    released = stub.DelNetwork(
        rpc_pb2.DelNetworkRequest(ClientVersion=VERSION, Reason="PodDeleted", **fields("orders")), timeout=5
    )
    assert released.Success and released.PodVlanId == 7
    assert [m.IPv4Addr for m in released.IPAllocationMetadata] == ["10.0.16.40"]


@pytest.mark.parametrize("node", [True], indirect=True)
def test_an_ipv6_node_answers_with_the_branch_enis_ipv6_address_and_ec2s_link_local_router(
    node: Node,
) -> None:
    stub, _, _ = node
    reply = stub.AddNetwork(rpc_pb2.AddNetworkRequest(ClientVersion=VERSION, **fields("orders")), timeout=5)
    assert reply.Success
    assert [(m.IPv4Addr, m.IPv6Addr, m.DeviceNumber) for m in reply.IPAllocationMetadata] == [
        ("", "2600:1f14:a:b100::28", -1)
    ]
    assert (reply.PodVlanId, reply.PodENISubnetGW) == (7, "fe80:ec2::1")  # upstream's GetIPv6Gateway
    released = stub.DelNetwork(
        rpc_pb2.DelNetworkRequest(ClientVersion=VERSION, Reason="PodDeleted", **fields("orders")), timeout=5
    )
    assert released.Success and released.PodVlanId == 7
    assert [m.IPv6Addr for m in released.IPAllocationMetadata] == ["2600:1f14:a:b100::28"]


def test_ordinary_pods_come_from_the_datastore_and_missing_pieces_are_success_false(node: Node) -> None:
    stub, trunk, allocator = node
    web = stub.AddNetwork(rpc_pb2.AddNetworkRequest(ClientVersion=VERSION, **fields("web")), timeout=5)
    assert web.Success and web.PodVlanId == 0
    assert [m.IPv4Addr for m in web.IPAllocationMetadata] == ["10.0.0.21"]
    late = stub.AddNetwork(rpc_pb2.AddNetworkRequest(ClientVersion=VERSION, **fields("late")), timeout=5)
    assert late.Success is False  # asked for a branch ENI, not annotated yet: kubelet retries
    trunk[0] = None
    orders = stub.AddNetwork(rpc_pb2.AddNetworkRequest(ClientVersion=VERSION, **fields("orders")), timeout=5)
    assert orders.Success is False and len(allocator.allocations()) == 1
