"""containerd's CRI plugin (what kubelet drives) running pods through the installed aws-cni.

RunPodSandbox makes containerd ADD through the bundled shim (system python3 -I -S from the CNI bin dir)
to the real CNI endpoint, which wires the pod for real; StopPodSandbox and RemovePodSandbox DEL it (the
second time without a netns). The endpoint's "host" is a node namespace this test creates.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2
from vpccni.cniplugin import bundle
from vpccni.ipamd.cni.testing import FakeAllocator, secondary_ips, serve_in_netns
from vpccni.networkutils.names import host_veth_name

# The `containerd` fixture (conftest.py) is a conftest.Containerd; conftest is not importable by name.
Containerd = Any

DEFAULT_RULE_PRIORITIES = {0, 32766, 32767}


def _ip_json(netns: str, *argv: str) -> Any:
    out = subprocess.run(["ip", "-n", netns, "-j", *argv], check=True, capture_output=True, text=True).stdout
    return json.loads(out or "[]")


@dataclass
class Node:
    name: str
    allocator: FakeAllocator
    containerd: Containerd

    def links(self) -> set[str]:
        return {link["ifname"] for link in _ip_json(self.name, "link", "show")} - {"lo"}

    def pod_rules(self) -> list[dict[str, Any]]:
        return [
            r for r in _ip_json(self.name, "rule", "show") if r.get("priority") not in DEFAULT_RULE_PRIORITIES
        ]

    def assert_clean(self) -> None:
        assert self.links() == set()
        assert self.pod_rules() == []
        assert _ip_json(self.name, "route", "show", "table", "main") == []
        assert self.allocator.allocations() == ()


def _network_ready(containerd: Containerd) -> bool:
    status = containerd.runtime.Status(api_pb2.StatusRequest(), timeout=10).status
    return any(c.type == "NetworkReady" and c.status for c in status.conditions)


@pytest.fixture
def node(containerd: Containerd) -> Iterator[Node]:
    suffix = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    name = f"vpccni-e2e-node-{suffix}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    node_fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    allocator = FakeAllocator(secondary_ips("10.0.1.10", 4))
    run = containerd.dir / "aws-node"
    conflist = containerd.conf_dir / "10-aws.conflist"
    try:
        bundle.build(containerd.bin_dir / "aws-cni")
        with serve_in_netns(
            netns_fd=node_fd, allocator=allocator, socket_path=str(run / "cni.sock"),
            del_queue_dir=str(run / "del-queue"),
        ):  # fmt: skip
            # The shipped conflist's shape (cniVersion 0.4.0, disableCheck), pointed at this node's socket.
            conflist.write_text(json.dumps({
                "cniVersion": "0.4.0", "name": "aws-cni", "disableCheck": True,
                "plugins": [{
                    "name": "aws-cni", "type": "aws-cni", "vethPrefix": "eni", "mtu": "9001",
                    "podSGEnforcingMode": "strict", "pluginLogFile": str(run / "plugin.log"),
                    "pluginLogLevel": "DEBUG", "cniSocket": str(run / "cni.sock"),
                    "delQueueDir": str(run / "del-queue"),
                    "capabilities": {"io.kubernetes.cri.pod-annotations": True},
                }],
            }))  # fmt: skip
            deadline = time.monotonic() + 30
            while not _network_ready(containerd):
                assert time.monotonic() < deadline, "containerd never loaded the aws-cni conflist"
                time.sleep(0.2)
            yield Node(name=name, allocator=allocator, containerd=containerd)
    finally:
        conflist.unlink(missing_ok=True)
        os.close(node_fd)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _sandbox_config(name: str) -> api_pb2.PodSandboxConfig:
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=str(uuid.uuid4()), namespace="default", attempt=0),
        hostname=name,
        annotations={"k8s.amazonaws.com/test": "e2e"},
        linux=api_pb2.LinuxPodSandboxConfig(),
    )


def test_run_stop_remove_pod_sandbox(node: Node) -> None:
    runtime = node.containerd.runtime
    config = _sandbox_config("web")
    sandbox = runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    try:
        status = runtime.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox), timeout=10)
        assert status.status.network.ip == "10.0.1.10"
        veth = host_veth_name("default", "web")
        assert node.links() == {veth}
        assert {r["priority"] for r in node.pod_rules()} == {512, 1536}
        (entry,) = node.allocator.allocations()
        assert (entry.key.network_name, entry.key.ifname) == ("aws-cni", "eth0")
        assert (entry.metadata.namespace, entry.metadata.name) == ("default", "web")
        runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
        node.assert_clean()
    finally:
        runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
        runtime.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
    node.assert_clean()


def test_a_failed_add_is_reported_and_cleaned_up(node: Node) -> None:
    node.allocator.ready = False
    with pytest.raises(grpc.RpcError) as info:
        node.containerd.runtime.RunPodSandbox(
            api_pb2.RunPodSandboxRequest(config=_sandbox_config("late")), timeout=60
        )
    assert "ipamd is not ready yet" in info.value.details()
    node.assert_clean()
    listed = node.containerd.runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items
    assert [s.metadata.name for s in listed if s.metadata.name == "late"] == []
