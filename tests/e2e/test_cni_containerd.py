"""containerd's CRI plugin (what kubelet drives) running pods through the installed aws-cni.

containerd runs inside a node namespace this test creates (the testbed's harness) and executes the
bundled shim from its CNI bin dir with the system python3 -I -S. The shim forwards to the real CNI
endpoint, whose workers are in the same node namespace and wire pods for real. RunPodSandbox is the ADD;
StopPodSandbox and RemovePodSandbox are DELs, the second one without a netns.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from vpccni.cniplugin import bundle
from vpccni.ipamd.cni.testing import FakeAllocator, secondary_ips, serve_in_netns
from vpccni.networkutils.names import host_veth_name
from vpccni.testbed.cri import Containerd, CriError, PodSpec

DEFAULT_RULE_PRIORITIES = {0, 32766, 32767}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root")


def _ip_json(*argv: str) -> Any:
    out = subprocess.run(["ip", "-j", *argv], check=True, capture_output=True, text=True).stdout
    return json.loads(out or "[]")


@dataclass
class Node:
    name: str
    allocator: FakeAllocator
    containerd: Containerd
    run_dir: Path

    def links(self) -> set[str]:
        return {link["ifname"] for link in _ip_json("-n", self.name, "link", "show")} - {"lo"}

    def pod_rules(self) -> list[dict[str, Any]]:
        rules = _ip_json("-n", self.name, "rule", "show")
        return [r for r in rules if r.get("priority") not in DEFAULT_RULE_PRIORITIES]

    def assert_clean(self) -> None:
        # DEL leaves the pod's veth to die with its namespace, which the runtime deletes next; the kernel
        # destroys a deleted namespace asynchronously, so its veth may outlive the call by a moment.
        deadline = time.monotonic() + 5
        while self.links() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.links() == set()
        assert self.pod_rules() == []
        assert _ip_json("-n", self.name, "route", "show", "table", "main") == []
        assert self.allocator.allocations() == ()


def _conflist(run: Path) -> dict[str, Any]:
    """The shipped conflist's shape (cniVersion 0.4.0, disableCheck), pointed at this test's socket."""
    return {
        "cniVersion": "0.4.0",
        "name": "aws-cni",
        "disableCheck": True,
        "plugins": [
            {
                "name": "aws-cni", "type": "aws-cni", "vethPrefix": "eni", "mtu": "9001",
                "podSGEnforcingMode": "strict", "pluginLogFile": str(run / "plugin.log"),
                "pluginLogLevel": "DEBUG", "cniSocket": str(run / "cni.sock"),
                "delQueueDir": str(run / "del-queue"),
                "capabilities": {"io.kubernetes.cri.pod-annotations": True},
            }
        ],
    }  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    name = f"vpccni-e2e-node-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    node_fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    allocator = FakeAllocator(secondary_ips("10.0.1.10", 4))
    run = tmp_path / "aws-node"
    shim = bundle.build(tmp_path / "bin" / "aws-cni")
    try:
        with (
            serve_in_netns(netns_fd=node_fd, allocator=allocator, socket_path=str(run / "cni.sock"),
                           del_queue_dir=str(run / "del-queue")),
            Containerd(netns_path=f"/run/netns/{name}") as containerd,
        ):  # fmt: skip
            containerd.install_plugin("aws-cni", shim)
            containerd.write_conflist("10-aws.conflist", _conflist(run))
            containerd.wait_network_ready()
            yield Node(name=name, allocator=allocator, containerd=containerd, run_dir=run)
    finally:
        os.close(node_fd)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_run_stop_remove_pod_sandbox(node: Node) -> None:
    with node.containerd.client() as cri:
        sandbox_id = cri.run_pod(PodSpec(name="web", annotations={"team": "e2e"}))
        try:
            sandbox = cri.status(sandbox_id)
            assert sandbox.ip == IPv4Address("10.0.1.10")
            assert sandbox.netns_path is not None
            pod_netns = str(sandbox.netns_path)
            out = subprocess.run(
                ["nsenter", f"--net={pod_netns}", "ip", "-j", "addr", "show", "dev", "eth0"],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            addrs = json.loads(out)
            assert [a["local"] for a in addrs[0]["addr_info"] if a["family"] == "inet"] == ["10.0.1.10"]
            assert node.links() == {host_veth_name("default", "web")}
            assert {r["priority"] for r in node.pod_rules()} == {512, 1536}
            (entry,) = node.allocator.allocations()
            assert (entry.key.network_name, entry.key.ifname) == ("aws-cni", "eth0")
            assert (entry.metadata.namespace, entry.metadata.name) == ("default", "web")
            cri.stop_pod(sandbox_id)
            node.assert_clean()
        finally:
            cri.stop_pod(sandbox_id)
            cri.remove_pod(sandbox_id)
    node.assert_clean()
    log = [json.loads(line) for line in (node.run_dir / "plugin.log").read_text().splitlines()]
    assert [r["command"] for r in log if r["msg"] == "done"] == ["ADD", "DEL", "DEL", "DEL"]


def test_a_failed_add_is_reported_and_cleaned_up(node: Node) -> None:
    node.allocator.ready = False
    with node.containerd.client() as cri:
        with pytest.raises(CriError) as info:
            cri.run_pod(PodSpec(name="late"))
        assert "ipamd is not ready yet" in str(info.value)
        assert cri.list_pods() == []
    node.assert_clean()
