"""Network policy at pod creation: ipamd asks the agent over its socket before answering an ADD (strict mode
refuses and rolls back when the agent cannot confirm; standard mode never holds a pod)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.version import VERSION
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.cni.netpolicy import GrpcPolicyAgent, PolicyAdmission, policy_admission
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, secondary_ips
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.pod import PodWiring
from vpccni.networkutils.testing import FakeNetnsNetlink, FakeNetwork
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc


class Agent(rpc_pb2_grpc.NPBackendServicer):  # type: ignore[misc]
    """An NPBackend that records what it was asked and answers `success`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.success = True

    def EnforceNpToPod(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.requests.append((request.K8S_POD_NAMESPACE, request.K8S_POD_NAME, request.NETWORK_POLICY_MODE))
        return rpc_pb2.EnforceNpReply(Success=self.success)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Agent, Path]]:
    servicer = Agent()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc_pb2_grpc.add_NPBackendServicer_to_server(servicer, server)
    sock = tmp_path / "npa.sock"
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    yield servicer, tmp_path
    server.stop(0)


def _add(service: CniService, network: FakeNetwork, name: str) -> object:
    fd, _ = network.add_namespace(name)
    request = Request(
        version=VERSION, command="ADD", container_id=name, ifname="eth0", netns_path="/n", has_netns_fd=True,
        k8s_args=K8sArgs(pod_name=name, pod_namespace="ns"), cni_version="1.1.0",
        netconf={"cniVersion": "1.1.0", "name": "aws-cni"},
    )  # fmt: skip
    return service.handle(request, fd)


def _service(admission: PolicyAdmission | None) -> tuple[CniService, FakeNetwork, Any, FakeAllocator]:
    network = FakeNetwork()
    _, host = network.add_namespace("node")
    allocator = FakeAllocator(secondary_ips("10.0.1.10", 3, route_table=2))
    service = CniService(
        allocator=allocator, network=PodWiring(host=host, namespaces=FakeNetnsNetlink(network)),
        host_rules=NetlinkHostPodRules(host), classify_netns=lambda fd: NetnsKind.POD, policy=admission,
    )  # fmt: skip
    return service, network, host, allocator


def test_no_mode_no_call() -> None:
    assert policy_admission("", "/run") is None and policy_admission("none", "/run") is None
    assert policy_admission("strict", "/run/x") is not None


def test_strict_add_is_answered_after_the_agent_confirms(agent: tuple[Agent, Path]) -> None:
    servicer, run_dir = agent
    service, network, _, allocator = _service(policy_admission("strict", run_dir))
    result = _add(service, network, "web")
    assert isinstance(result, dict) and servicer.requests == [("ns", "web", "strict")]
    assert len(allocator.allocations()) == 1


def test_strict_refusal_is_error_11_and_leaves_nothing(agent: tuple[Agent, Path]) -> None:
    servicer, run_dir = agent
    servicer.success = False
    service, network, host, allocator = _service(policy_admission("strict", run_dir))
    with pytest.raises(CNIError) as info:
        _add(service, network, "web")
    assert info.value.code == ErrorCode.TRY_AGAIN_LATER
    assert "did not confirm" in info.value.msg and "strict" in info.value.msg and "ns/web" in info.value.msg
    assert "aws-eks-nodeagent" in info.value.details
    assert allocator.allocations() == () and host.link(host_veth_name("ns", "web")) is None


def test_strict_with_the_agent_down_names_its_socket(tmp_path: Path) -> None:
    admission = PolicyAdmission(mode="strict", agent=GrpcPolicyAgent(tmp_path / "npa.sock"), where="unix:X",
                                timeout_s=0.5)  # fmt: skip
    service, network, _, allocator = _service(admission)
    with pytest.raises(CNIError) as info:
        _add(service, network, "web")
    assert info.value.code == ErrorCode.TRY_AGAIN_LATER and "unix:X" in info.value.msg
    assert allocator.allocations() == ()


def test_standard_mode_never_holds_a_pod(tmp_path: Path, agent: tuple[Agent, Path]) -> None:
    servicer, run_dir = agent
    service, network, _, _ = _service(policy_admission("standard", run_dir))
    assert isinstance(_add(service, network, "a"), dict) and servicer.requests == [("ns", "a", "standard")]
    servicer.success = False
    assert isinstance(_add(service, network, "b"), dict)
    down, network2, _, allocator2 = _service(policy_admission("standard", tmp_path / "nowhere"))
    assert isinstance(_add(down, network2, "c"), dict) and len(allocator2.allocations()) == 1
