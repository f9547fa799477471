"""The gRPC contract: upstream field numbers, the import path, a real round trip, stale-stub detection."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import tempfile
from concurrent import futures

import grpc
import pytest
from google.protobuf import empty_pb2
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[4]

# Upstream rpc/rpc.proto (v1.23.1): message -> {field: number}. A renumbered field breaks the Go peers.
UPSTREAM_FIELDS = {
    "AddNetworkRequest": {
        "ClientVersion": 8,
        "K8S_POD_NAME": 1,
        "K8S_POD_NAMESPACE": 2,
        "K8S_POD_INFRA_CONTAINER_ID": 3,
        "ContainerID": 7,
        "IfName": 5,
        "NetworkName": 6,
        "Netns": 4,
        "RequiresMultiNICAttachment": 9,
    },
    "IPAllocationMetadata": {"IPv4Addr": 1, "IPv6Addr": 2, "DeviceNumber": 3, "RouteTableId": 4},
    "AddNetworkReply": {
        "Success": 1,
        "IPAllocationMetadata": 2,
        "UseExternalSNAT": 5,
        "VPCv4CIDRs": 6,
        "VPCv6CIDRs": 12,
        "PodVlanId": 7,
        "PodENIMAC": 8,
        "PodENISubnetGW": 9,
        "ParentIfIndex": 10,
        "NetworkPolicyMode": 13,
    },
    "DelNetworkRequest": {
        "ClientVersion": 9,
        "K8S_POD_NAME": 1,
        "K8S_POD_NAMESPACE": 2,
        "K8S_POD_INFRA_CONTAINER_ID": 3,
        "Reason": 5,
        "ContainerID": 8,
        "IfName": 6,
        "NetworkName": 7,
        "K8S_POD_UID": 10,
    },
    "DelNetworkReply": {"Success": 1, "IPAllocationMetadata": 2, "PodVlanId": 4, "NetworkPolicyMode": 6},
    "EnforceNpRequest": {
        "K8S_POD_NAME": 1,
        "K8S_POD_NAMESPACE": 2,
        "NETWORK_POLICY_MODE": 3,
        "InterfaceCount": 4,
    },
    "EnforceNpReply": {"Success": 1},
    "DeleteNpRequest": {"K8S_POD_NAME": 1, "K8S_POD_NAMESPACE": 2},
    "DeleteNpReply": {"Success": 1},
    "NetworkPolicyAgentConfigReply": {
        "NetworkPolicyMode": 1,
        "MultiNICEnabled": 2,
        "NodeIPv4": 3,
        "NodeIPv6": 4,
        "InstanceID": 5,
        "Region": 6,
    },
}

UPSTREAM_SERVICES = {
    "CNIBackend": {
        "AddNetwork": ("AddNetworkRequest", "AddNetworkReply"),
        "DelNetwork": ("DelNetworkRequest", "DelNetworkReply"),
    },
    "NPBackend": {
        "EnforceNpToPod": ("EnforceNpRequest", "EnforceNpReply"),
        "DeletePodNp": ("DeleteNpRequest", "DeleteNpReply"),
    },
    "ConfigServerBackend": {
        "GetNetworkPolicyConfigs": ("google.protobuf.Empty", "NetworkPolicyAgentConfigReply")
    },
}


def test_file_and_package_match_upstream() -> None:
    assert rpc_pb2.DESCRIPTOR.name == "rpc.proto"
    assert rpc_pb2.DESCRIPTOR.package == "rpc"
    assert [d.name for d in rpc_pb2.DESCRIPTOR.dependencies] == ["google/protobuf/empty.proto"]


@pytest.mark.parametrize("message", sorted(UPSTREAM_FIELDS))
def test_message_fields_and_numbers_match_upstream(message: str) -> None:
    descriptor = rpc_pb2.DESCRIPTOR.message_types_by_name[message]
    assert {f.name: f.number for f in descriptor.fields} == UPSTREAM_FIELDS[message]


def test_no_extra_messages() -> None:
    assert set(rpc_pb2.DESCRIPTOR.message_types_by_name) == set(UPSTREAM_FIELDS)


def test_services_and_methods_match_upstream() -> None:
    services = rpc_pb2.DESCRIPTOR.services_by_name
    assert set(services) == set(UPSTREAM_SERVICES)
    for name, methods in UPSTREAM_SERVICES.items():
        got = {
            m.name: (
                m.input_type.full_name.removeprefix("rpc."),
                m.output_type.full_name.removeprefix("rpc."),
            )
            for m in services[name].methods
        }
        assert got == methods


class _Backend(rpc_pb2_grpc.CNIBackendServicer, rpc_pb2_grpc.ConfigServerBackendServicer):
    def AddNetwork(self, request, context):
        meta = rpc_pb2.IPAllocationMetadata(IPv4Addr="10.0.1.23", DeviceNumber=1, RouteTableId=2)
        return rpc_pb2.AddNetworkReply(Success=request.ContainerID == "c1", IPAllocationMetadata=[meta])

    def GetNetworkPolicyConfigs(self, request, context):
        return rpc_pb2.NetworkPolicyAgentConfigReply(NetworkPolicyMode="standard", Region="us-west-2")


def test_round_trip_over_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        address = f"unix://{tmp}/ipamd.sock"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        rpc_pb2_grpc.add_CNIBackendServicer_to_server(_Backend(), server)
        rpc_pb2_grpc.add_ConfigServerBackendServicer_to_server(_Backend(), server)
        server.add_insecure_port(address)
        server.start()
        try:
            with grpc.insecure_channel(address) as channel:
                reply = rpc_pb2_grpc.CNIBackendStub(channel).AddNetwork(
                    rpc_pb2.AddNetworkRequest(ContainerID="c1", IfName="eth0"), timeout=5
                )
                config = rpc_pb2_grpc.ConfigServerBackendStub(channel).GetNetworkPolicyConfigs(
                    empty_pb2.Empty(), timeout=5
                )
        finally:
            server.stop(grace=None)
    assert reply.Success
    assert reply.IPAllocationMetadata[0].RouteTableId == 2
    assert config.Region == "us-west-2"


def test_wire_bytes_are_upstream_field_numbers() -> None:
    # Field 8 (ClientVersion), wire type 2: tag byte 0x42. A Go client encodes exactly this.
    data = rpc_pb2.AddNetworkRequest(ClientVersion="v1.23.1").SerializeToString()
    assert data == b"\x42\x07v1.23.1"


def _load_codegen():
    spec = importlib.util.spec_from_file_location("codegen", ROOT / "scripts" / "codegen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_codegen_check_passes_on_the_committed_stubs() -> None:
    assert _load_codegen().main(["--check"]) == 0


def test_codegen_check_reports_stale_stubs(tmp_path: pathlib.Path) -> None:
    codegen = _load_codegen()
    committed = tmp_path / "committed"
    shutil.copytree(codegen.OUT_DIR, committed)
    grpc_file = committed / "rpc_pb2_grpc.py"
    grpc_file.write_text(grpc_file.read_text().replace("AddNetwork", "AddNetworkX"))
    (committed / "rpc_pb2.pyi").unlink()
    fresh = tmp_path / "fresh"
    codegen.generate(fresh)
    report = codegen.stale_report(committed, fresh)
    assert report[0] == "missing: rpc_pb2.pyi"
    assert report[1].startswith("differs: rpc_pb2_grpc.py (")
    assert codegen.stale_report(codegen.OUT_DIR, fresh) == []
