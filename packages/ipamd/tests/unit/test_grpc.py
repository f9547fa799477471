"""The upstream gRPC services over a real Unix socket: CNIBackend (allocation only), ConfigServerBackend,
grpc.health.v1, version skew, socket handling and graceful stop."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.allocator import Allocator
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.cni.testing import two_cards
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.grpc.backend import CniBackendServicer, ConfigServerServicer, NodeFacts
from vpccni.ipamd.grpc.server import HEALTH_SERVICE, GrpcServer, GrpcServerSettings
from vpccni.ipamd.pool.testing import IdlePool
from vpccni.ipamd.ports import EniRecord
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc

VERSION = "9.9.9"
VPC = IPv4Network("10.0.0.0/16")
FACTS = NodeFacts(
    version=VERSION,
    use_external_snat=False,
    exclude_snat_cidrs=(IPv4Network("192.168.0.0/24"),),
    network_policy_mode="standard",
    node_ipv4=IPv4Address("10.0.0.10"),
    instance_id="i-0123",
    region="us-west-2",
)


@pytest.fixture
def datastore() -> DataStore:
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=FakeClock())
    ds.add_eni(
        EniRecord(eni_id="eni-1", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_eni(EniRecord(eni_id="eni-2", device_number=1, primary_ip=IPv4Address("10.0.0.20")))
    ds.add_cidrs("eni-2", [IPv4Network("10.0.0.21/32")], is_prefix=False)
    return ds


@pytest.fixture
def allocator(datastore: DataStore) -> Allocator:
    return Allocator(datastore=datastore, pool=IdlePool(), default_timeout_s=0.1)


def _server(
    tmp_path: Path, allocator: Allocator, *, allowed: frozenset[int] | None, tcp: str = ""
) -> GrpcServer:
    backend = CniBackendServicer(allocator=allocator, facts=FACTS, vpc_cidrs=lambda: (VPC,))
    config = ConfigServerServicer(facts=FACTS)
    return GrpcServer(
        settings=GrpcServerSettings(
            socket_path=tmp_path / "run" / "ipamd.sock", allowed_uids=allowed, tcp_address=tcp
        ),
        register=(
            lambda s: rpc_pb2_grpc.add_CNIBackendServicer_to_server(backend, s),
            lambda s: rpc_pb2_grpc.add_ConfigServerBackendServicer_to_server(config, s),
        ),
    )


@pytest.fixture
def server(tmp_path: Path, allocator: Allocator) -> Iterator[GrpcServer]:
    """As ipamd runs it: through the peer check, which lets this test's own uid in."""
    srv = _server(tmp_path, allocator, allowed=frozenset({os.getuid()}))
    allocator.mark_ready()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(0.5)


@pytest.fixture
def channel(server: GrpcServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix:{server.socket_path}") as ch:
        yield ch


def pod_fields(pod: str) -> dict[str, str]:
    """What AddNetworkRequest and DelNetworkRequest share for one pod."""
    return {
        "K8S_POD_NAME": pod,
        "K8S_POD_NAMESPACE": "default",
        "ContainerID": f"c-{pod}",
        "IfName": "eth0",
        "NetworkName": "aws-cni",
    }


def add_request(pod: str, version: str = VERSION) -> Any:
    return rpc_pb2.AddNetworkRequest(ClientVersion=version, **pod_fields(pod))


def del_request(pod: str, version: str = VERSION) -> Any:
    return rpc_pb2.DelNetworkRequest(ClientVersion=version, Reason="PodDeleted", **pod_fields(pod))


def test_socket_is_0660_and_health_serves_the_aws_node_service(
    server: GrpcServer, channel: grpc.Channel
) -> None:
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o660
    health = health_pb2_grpc.HealthStub(channel)
    for service in (HEALTH_SERVICE, ""):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    server.set_serving(False)
    reply = health.Check(health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_add_and_del_network_with_upstream_fields(channel: grpc.Channel, datastore: DataStore) -> None:
    stub = rpc_pb2_grpc.CNIBackendStub(channel)
    reply = stub.AddNetwork(add_request("web"), timeout=5)
    assert reply.Success
    assert [(m.IPv4Addr, m.DeviceNumber, m.RouteTableId) for m in reply.IPAllocationMetadata] == [
        ("10.0.0.21", 1, 2)
    ]
    assert list(reply.VPCv4CIDRs) == ["10.0.0.0/16", "192.168.0.0/24"]
    assert reply.UseExternalSNAT is False
    assert reply.NetworkPolicyMode == "standard"
    assert [a.metadata.name for a in datastore.assigned()] == ["web"]

    released = stub.DelNetwork(del_request("web"), timeout=5)
    assert released.Success
    assert [m.IPv4Addr for m in released.IPAllocationMetadata] == ["10.0.0.21"]
    assert datastore.assigned() == ()
    unknown = stub.DelNetwork(del_request("web"), timeout=5)
    assert unknown.Success and not unknown.IPAllocationMetadata


def test_no_address_is_success_false(channel: grpc.Channel) -> None:
    stub = rpc_pb2_grpc.CNIBackendStub(channel)
    assert stub.AddNetwork(add_request("first"), timeout=5).Success
    reply = stub.AddNetwork(add_request("second"), timeout=5)
    assert reply.Success is False
    assert not reply.IPAllocationMetadata


@pytest.mark.parametrize("call", ["add", "del"])
def test_wrong_client_version_is_failed_precondition(channel: grpc.Channel, call: str) -> None:
    stub = rpc_pb2_grpc.CNIBackendStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        if call == "add":
            stub.AddNetwork(add_request("web", version="1.7.0"), timeout=5)
        else:
            stub.DelNetwork(del_request("web", version=""), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == "wrong client version"


def test_not_ready_is_unavailable(tmp_path: Path, datastore: DataStore) -> None:
    allocator = Allocator(datastore=datastore, pool=IdlePool())  # never marked ready
    backend = CniBackendServicer(allocator=allocator, facts=FACTS, vpc_cidrs=lambda: (VPC,))
    srv = GrpcServer(
        settings=GrpcServerSettings(socket_path=tmp_path / "s.sock"),
        register=(lambda s: rpc_pb2_grpc.add_CNIBackendServicer_to_server(backend, s),),
    )
    srv.start()
    try:
        with grpc.insecure_channel(f"unix:{srv.socket_path}") as ch, pytest.raises(grpc.RpcError) as err:
            rpc_pb2_grpc.CNIBackendStub(ch).AddNetwork(add_request("web"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(0.5)


def test_network_policy_configs(channel: grpc.Channel) -> None:
    reply = rpc_pb2_grpc.ConfigServerBackendStub(channel).GetNetworkPolicyConfigs(
        empty_pb2.Empty(), timeout=5
    )
    assert (
        reply.NetworkPolicyMode,
        reply.MultiNICEnabled,
        reply.NodeIPv4,
        reply.InstanceID,
        reply.Region,
    ) == (
        "standard",
        False,
        "10.0.0.10",
        "i-0123",
        "us-west-2",
    )


def test_stale_socket_is_replaced_and_stop_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "ipamd.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    srv = GrpcServer(settings=GrpcServerSettings(socket_path=path))
    srv.start()
    with grpc.insecure_channel(f"unix:{path}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    srv.stop(0.5)
    assert not path.exists()


def test_a_regular_file_at_the_socket_path_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ipamd.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        GrpcServer(settings=GrpcServerSettings(socket_path=path)).start()
    assert path.read_text() == "not a socket"


def test_a_peer_of_another_uid_never_reaches_the_services(tmp_path: Path, allocator: Allocator) -> None:
    srv = _server(tmp_path, allocator, allowed=frozenset({os.getuid() + 4242}))
    allocator.mark_ready()
    srv.start()
    try:
        with grpc.insecure_channel(f"unix:{srv.socket_path}") as ch, pytest.raises(grpc.RpcError) as err:
            rpc_pb2_grpc.CNIBackendStub(ch).DelNetwork(del_request("web"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # even with the public socket opened up to everyone, the server itself stays out of reach
        os.chmod(srv.socket_path, 0o666)
        private = srv.socket_path.parent / ".ipamd-grpc"
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    finally:
        srv.stop(0.5)


def test_concurrent_calls_on_many_connections_relay_intact(server: GrpcServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def calls(_: int) -> list[str]:
        # a connection of its own each time: the relay sets up and tears down a pair per channel
        with grpc.insecure_channel(f"unix:{server.socket_path}") as ch:
            config = rpc_pb2_grpc.ConfigServerBackendStub(ch)
            return [
                config.GetNetworkPolicyConfigs(empty_pb2.Empty(), timeout=5).InstanceID for _ in range(10)
            ]

    with ThreadPoolExecutor(4) as pool:
        answers = [a for batch in pool.map(calls, range(20)) for a in batch]
    assert answers == ["i-0123"] * 200


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_over_tcp_probes_answer_but_address_changes_are_refused(tmp_path: Path, allocator: Allocator) -> None:
    port = _free_tcp_port()
    srv = _server(tmp_path, allocator, allowed=frozenset({os.getuid()}), tcp=f"127.0.0.1:{port}")
    allocator.mark_ready()
    srv.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            config = rpc_pb2_grpc.ConfigServerBackendStub(ch).GetNetworkPolicyConfigs(
                empty_pb2.Empty(), timeout=5
            )
            assert config.NodeIPv4 == "10.0.0.10"
            for call in ("AddNetwork", "DelNetwork"):
                request = add_request("web") if call == "AddNetwork" else del_request("web")
                with pytest.raises(grpc.RpcError) as err:
                    getattr(rpc_pb2_grpc.CNIBackendStub(ch), call)(request, timeout=5)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "Unix socket" in (err.value.details() or "")
    finally:
        srv.stop(0.5)


def test_add_network_with_multi_nic_attachment_answers_an_address_per_card(tmp_path: Path) -> None:
    """Upstream's RequiresMultiNICAttachment: one IPAllocationMetadata per managed card, in card order, and
    DelNetwork lists them all; without ENABLE_MULTI_NIC the pod's ADD is refused (Success=false)."""
    cards, _, _ = two_cards()
    cards.mark_ready()
    backend = CniBackendServicer(
        allocator=cards, facts=replace(FACTS, multi_nic=True), vpc_cidrs=lambda: (VPC,), multi_nic=cards
    )
    plain = CniBackendServicer(allocator=cards, facts=FACTS, vpc_cidrs=lambda: (VPC,))
    config = ConfigServerServicer(facts=replace(FACTS, multi_nic=True))
    servers = [
        GrpcServer(
            settings=GrpcServerSettings(socket_path=tmp_path / f"{n}.sock"),
            register=(
                lambda s, b=b: rpc_pb2_grpc.add_CNIBackendServicer_to_server(b, s),
                lambda s: rpc_pb2_grpc.add_ConfigServerBackendServicer_to_server(config, s),
            ),
        )
        for n, b in (("multi", backend), ("plain", plain))
    ]
    for srv in servers:
        srv.start()
    try:
        with grpc.insecure_channel(f"unix:{servers[0].socket_path}") as ch:
            stub = rpc_pb2_grpc.CNIBackendStub(ch)
            request = rpc_pb2.AddNetworkRequest(
                ClientVersion=VERSION, RequiresMultiNICAttachment=True, **pod_fields("trainer")
            )
            reply = stub.AddNetwork(request, timeout=5)
            assert reply.Success
            assert [(m.IPv4Addr, m.RouteTableId) for m in reply.IPAllocationMetadata] == [
                ("10.0.1.10", 254),
                ("10.0.2.10", 10100),
            ]
            released = stub.DelNetwork(del_request("trainer"), timeout=5)
            assert [m.IPv4Addr for m in released.IPAllocationMetadata] == ["10.0.1.10", "10.0.2.10"]
            assert cards.allocations() == ()
            nic = rpc_pb2_grpc.ConfigServerBackendStub(ch).GetNetworkPolicyConfigs(
                empty_pb2.Empty(), timeout=5
            )
            assert nic.MultiNICEnabled is True
        with grpc.insecure_channel(f"unix:{servers[1].socket_path}") as ch:
            refused = rpc_pb2_grpc.CNIBackendStub(ch).AddNetwork(request, timeout=5)
            assert refused.Success is False and cards.allocations() == ()
    finally:
        for srv in servers:
            srv.stop(0.5)


def test_an_ipv6_node_answers_with_ipv6_fields(tmp_path: Path) -> None:
    """IPv6 mode: the pod's /128 in IPv6Addr, the VPC's IPv6 CIDRs in VPCv6CIDRs, none of IPv4's."""
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=FakeClock(), ipv6=True)
    ds.add_eni(
        EniRecord(eni_id="eni-1", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_cidrs("eni-1", [IPv6Network("2001:db8:0:100:1::/80")], is_prefix=True)
    allocator = Allocator(datastore=ds, pool=IdlePool(), default_timeout_s=0.1)
    facts = NodeFacts(version=VERSION, use_external_snat=False, node_ipv6=IPv6Address("2001:db8:0:100::4"))
    backend = CniBackendServicer(
        allocator=allocator, facts=facts, vpc_cidrs=lambda: (),
        vpc_v6_cidrs=lambda: (IPv6Network("2001:db8:0:100::/56"),),
    )  # fmt: skip
    config = ConfigServerServicer(facts=facts)
    srv = GrpcServer(
        settings=GrpcServerSettings(
            socket_path=tmp_path / "ipamd.sock", allowed_uids=frozenset({os.getuid()})
        ),
        register=(
            lambda s: rpc_pb2_grpc.add_CNIBackendServicer_to_server(backend, s),
            lambda s: rpc_pb2_grpc.add_ConfigServerBackendServicer_to_server(config, s),
        ),
    )
    allocator.mark_ready()
    srv.start()
    try:
        with grpc.insecure_channel(f"unix:{srv.socket_path}") as ch:
            reply = rpc_pb2_grpc.CNIBackendStub(ch).AddNetwork(add_request("web6"), timeout=5)
            (meta,) = reply.IPAllocationMetadata
            assert (meta.IPv4Addr, meta.IPv6Addr, meta.DeviceNumber, meta.RouteTableId) == (
                "",
                "2001:db8:0:100:1::",
                0,
                254,
            )
            assert list(reply.VPCv6CIDRs) == ["2001:db8:0:100::/56"] and list(reply.VPCv4CIDRs) == []
            released = rpc_pb2_grpc.CNIBackendStub(ch).DelNetwork(del_request("web6"), timeout=5)
            assert [m.IPv6Addr for m in released.IPAllocationMetadata] == ["2001:db8:0:100:1::"]
            policy = rpc_pb2_grpc.ConfigServerBackendStub(ch).GetNetworkPolicyConfigs(
                empty_pb2.Empty(), timeout=5
            )
            assert policy.NodeIPv6 == "2001:db8:0:100::4"
    finally:
        srv.stop(0.5)
