"""CriClient against an in-process RuntimeService on a Unix socket: requests carry what kubelet sends, replies
become typed values, and failures become CriError with containerd's words."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc
from vpccni.testbed.cri.client import CriClient, CriError, PodSpec, PortMapping, PortProtocol


class RecordingRuntime(cri_grpc.RuntimeServiceServicer):
    """Keeps sandboxes in a dict, as containerd would, and fails ADD for pods named `fail`."""

    def __init__(self) -> None:
        self.configs: dict[str, Any] = {}
        self.stopped: set[str] = set()

    def RunPodSandbox(self, request: Any, context: Any) -> Any:
        if request.config.metadata.name == "fail":
            context.abort(grpc.StatusCode.UNKNOWN, "failed to setup network for sandbox: plugin type=aws-cni")
        sandbox_id = f"sb{len(self.configs)}"
        self.configs[sandbox_id] = request.config
        return cri.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    def PodSandboxStatus(self, request: Any, context: Any) -> Any:
        config = self.configs[request.pod_sandbox_id]
        stopped = request.pod_sandbox_id in self.stopped
        info = {
            "pid": 0 if stopped else 4242,
            "netNamespaceClosed": stopped,
            "runtimeSpec": {
                "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/x/netns/1"}]}
            },
        }
        return cri.PodSandboxStatusResponse(
            status=cri.PodSandboxStatus(
                id=request.pod_sandbox_id,
                metadata=config.metadata,
                state=cri.SANDBOX_NOTREADY if stopped else cri.SANDBOX_READY,
                network=cri.PodSandboxNetworkStatus(
                    ip="" if stopped else "10.0.1.7", additional_ips=[cri.PodIP(ip="2001:db8::7")]
                ),
            ),
            info={"info": json.dumps(info)},
        )

    def StopPodSandbox(self, request: Any, context: Any) -> Any:
        self.stopped.add(request.pod_sandbox_id)
        return cri.StopPodSandboxResponse()

    def RemovePodSandbox(self, request: Any, context: Any) -> Any:
        self.configs.pop(request.pod_sandbox_id)
        return cri.RemovePodSandboxResponse()

    def ListPodSandbox(self, request: Any, context: Any) -> Any:
        return cri.ListPodSandboxResponse(items=[cri.PodSandbox(id=i) for i in self.configs])


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[tuple[RecordingRuntime, Path]]:
    servicer = RecordingRuntime()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    cri_grpc.add_RuntimeServiceServicer_to_server(servicer, server)
    sock = tmp_path / "cri.sock"
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    try:
        yield servicer, sock
    finally:
        server.stop(grace=None)


def test_run_pod_sends_metadata_port_mappings_and_cgroup_parent(
    runtime: tuple[RecordingRuntime, Path],
) -> None:
    servicer, sock = runtime
    spec = PodSpec(
        name="web",
        namespace="shop",
        uid="u-1",
        port_mappings=(PortMapping(container_port=80, host_port=8080, protocol=PortProtocol.UDP),),
        annotations={"a": "b"},
    )
    with CriClient(socket=sock, cgroup_parent="/tests-1") as client:
        sandbox_id = client.run_pod(spec)

    config = servicer.configs[sandbox_id]
    assert (config.metadata.name, config.metadata.namespace, config.metadata.uid) == ("web", "shop", "u-1")
    [mapping] = config.port_mappings
    assert (mapping.container_port, mapping.host_port, mapping.protocol) == (80, 8080, cri.UDP)
    assert config.linux.cgroup_parent == "/tests-1"
    assert dict(config.annotations) == {"a": "b"}


def test_status_reports_ip_pid_and_netns_until_stopped(runtime: tuple[RecordingRuntime, Path]) -> None:
    _, sock = runtime
    with CriClient(socket=sock) as client:
        sandbox_id = client.run_pod(PodSpec(name="web", uid="u-2"))
        running = client.status(sandbox_id)
        client.stop_pod(sandbox_id)
        stopped = client.status(sandbox_id)
        assert client.list_pods() == [sandbox_id]
        client.remove_pod(sandbox_id)
        assert client.list_pods() == []

    assert running.ready and running.ip == ipaddress.IPv4Address("10.0.1.7")
    assert running.additional_ips == (ipaddress.IPv6Address("2001:db8::7"),)
    assert running.pid == 4242 and running.netns_path == Path("/x/netns/1")
    assert (running.name, running.uid) == ("web", "u-2")
    assert not stopped.ready and stopped.ip is None and stopped.pid is None and stopped.netns_path is None


def test_failures_carry_the_runtime_message_and_code(runtime: tuple[RecordingRuntime, Path]) -> None:
    _, sock = runtime
    with CriClient(socket=sock) as client, pytest.raises(CriError, match="plugin type=aws-cni") as failure:
        client.run_pod(PodSpec(name="fail"))
    assert failure.value.code == grpc.StatusCode.UNKNOWN
    assert "RunPodSandbox" in str(failure.value)


def test_an_absent_runtime_is_a_cri_error(tmp_path: Path) -> None:
    with CriClient(socket=tmp_path / "none.sock", timeout=0.5) as client, pytest.raises(CriError) as failure:
        client.version()
    assert failure.value.code == grpc.StatusCode.UNAVAILABLE
