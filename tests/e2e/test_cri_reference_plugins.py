"""containerd's CRI drives the reference plugins (bridge + host-local, chained portmap) on a testbed node: the
harness itself is proven here, with plugins whose behaviour is known, before the product replaces them.

Real CRI calls (RunPodSandbox / StopPodSandbox / RemovePodSandbox) cause real CNI ADD and DEL; real packets
cross the testbed VPC from another node to a hostPort.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.cri import Containerd, CriClient, CriError, PodSpec, PortMapping, leftovers, podnet
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import tcp_echo

BRIDGE_SUBNET = ipaddress.IPv4Network("10.244.7.0/24")  # outside the testbed VPC, local to node 1
CONTAINER_PORT = 8080
HOST_PORT = 18080
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(ClusterConfig()) as two_nodes:
        two_nodes.add_node()
        two_nodes.add_node()
        yield two_nodes


def _bridge_conflist(ipam_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "cri-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(BRIDGE_SUBNET)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],  # via the bridge, the node routes for the pod
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


@pytest.fixture
def containerd(cluster: Cluster) -> Iterator[Containerd]:
    node = cluster.nodes[0]
    with Containerd(netns_path=node.netns_path) as runtime:
        runtime.link_reference_plugins("bridge", "host-local", "portmap")
        runtime.write_conflist("10-bridge.conflist", _bridge_conflist(runtime.layout.base / "ipam"))
        runtime.wait_network_ready(network="cri-bridge")
        yield runtime


@pytest.fixture
def cri(containerd: Containerd) -> Iterator[CriClient]:
    with containerd.client() as client:
        yield client


def _links(node: Node) -> set[str]:
    return set(node.network.links())


def _nat_rules(node: Node) -> str:
    return ns.exec_in_netns(node.netns, ["iptables", "-t", "nat", "-S"])


def _reserved_ips(containerd: Containerd) -> set[str]:
    store = containerd.layout.base / "ipam" / "cri-bridge"
    return {p.name for p in store.iterdir() if p.name[0].isdigit()} if store.is_dir() else set()


def test_sandboxes_get_addresses_and_reach_each_other(containerd: Containerd, cri: CriClient) -> None:
    first = cri.status(cri.run_pod(PodSpec(name="a")))
    second = cri.status(cri.run_pod(PodSpec(name="b")))

    assert first.ready and second.ready
    assert first.ip in BRIDGE_SUBNET and second.ip in BRIDGE_SUBNET and first.ip != second.ip
    assert first.netns_path is not None and second.netns_path is not None
    assert first.netns_path.is_relative_to(containerd.layout.pod_netns_dir)
    assert [a.ip for a in podnet.addresses(first.netns_path)] == [first.ip]
    assert isinstance(second.ip, ipaddress.IPv4Address)
    assert podnet.ping(first.netns_path, second.ip)
    assert _reserved_ips(containerd) == {str(first.ip), str(second.ip)}


def test_host_port_reaches_the_pod_from_another_node(cluster: Cluster, cri: CriClient) -> None:
    node, other = cluster.nodes
    sandbox = cri.status(
        cri.run_pod(
            PodSpec(
                name="web", port_mappings=(PortMapping(container_port=CONTAINER_PORT, host_port=HOST_PORT),)
            )
        )
    )
    assert sandbox.netns_path is not None and isinstance(sandbox.ip, ipaddress.IPv4Address)

    with podnet.echo_server(sandbox.netns_path, sandbox.ip, CONTAINER_PORT):
        seen = tcp_echo(other.netns, node.instance.primary_ip, HOST_PORT)
    # Not masqueraded: the pod sees the other node's own address.
    assert seen == str(other.instance.primary_ip)


def test_stop_and_remove_leave_nothing_behind(
    cluster: Cluster, containerd: Containerd, cri: CriClient
) -> None:
    node = cluster.nodes[0]
    links_before = _links(node)
    spec = PodSpec(name="short", port_mappings=(PortMapping(container_port=80, host_port=18081),))
    sandbox_id = cri.run_pod(spec)
    sandbox = cri.status(sandbox_id)
    assert sandbox.netns_path is not None
    assert len(_links(node) - links_before) >= 1  # the pod's host-side veth (and cni0 the first time)
    assert "18081" in _nat_rules(node)

    cri.stop_pod(sandbox_id)
    stopped = cri.status(sandbox_id)
    cri.remove_pod(sandbox_id)

    assert not stopped.ready and stopped.netns_path is None
    assert cri.list_pods() == []
    assert _links(node) - links_before <= {"cni0"}
    assert not any(name.startswith("veth") for name in _links(node))
    assert "18081" not in _nat_rules(node)
    assert _reserved_ips(containerd) == set()
    assert not sandbox.netns_path.exists()
    assert not list(containerd.layout.pod_netns_dir.iterdir())


def test_a_failing_add_is_a_clear_sandbox_error(containerd: Containerd, cri: CriClient) -> None:
    bad = _bridge_conflist(containerd.layout.base / "ipam")
    bad["name"] = "cri-bridge-small"
    bad["plugins"][0]["bridge"] = "cni1"
    bad["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.244.8.0/30"}]]  # room for one pod only
    containerd.write_conflist("10-bridge.conflist", bad)
    containerd.wait_network_ready(network="cri-bridge-small")
    cri.run_pod(PodSpec(name="only"))

    with pytest.raises(CriError, match="no IP addresses available"):
        cri.run_pod(PodSpec(name="one-too-many"))
    # CRI called DEL for the failed ADD and dropped the sandbox.
    assert len(cri.list_pods()) == 1


def test_stop_cleans_up_the_machine(cluster: Cluster) -> None:
    node = cluster.nodes[1]
    runtime = Containerd(netns_path=node.netns_path)
    runtime.start()
    base, pid, cgroup = runtime.layout.base, runtime.pid, runtime.cgroup_parent
    runtime.link_reference_plugins("bridge", "host-local")
    conflist = _bridge_conflist(base / "ipam")
    conflist["plugins"] = conflist["plugins"][:1]
    runtime.write_conflist("10-bridge.conflist", conflist)
    runtime.wait_network_ready()
    with runtime.client() as client:
        left_running = client.status(client.run_pod(PodSpec(name="left-running")))
    assert left_running.pid is not None

    runtime.stop()

    assert pid is not None and not leftovers.alive(pid)
    assert not leftovers.alive(left_running.pid)
    assert not base.exists()
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{cgroup.strip('/')}"))
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(base) not in mounts
    assert not any(name.startswith("veth") for name in _links(node))
    shims = subprocess.run(["pgrep", "-f", f"-address {base}"], capture_output=True, text=True).stdout
    assert shims == ""


_KILLED_RUN = """
import json, os, sys
from pathlib import Path
from vpccni.testbed.cri import Containerd, PodSpec
runtime = Containerd(netns_path=sys.argv[1]).start()
runtime.link_reference_plugins("bridge", "host-local")
runtime.write_conflist("10-b.conflist", json.loads(sys.argv[2].replace("@BASE@", str(runtime.layout.base))))
runtime.wait_network_ready()
sandbox = runtime.client().status(runtime.client().run_pod(PodSpec(name="orphan")))
print(json.dumps({"base": str(runtime.layout.base), "pid": runtime.pid, "pod_pid": sandbox.pid,
                  "cgroup": runtime.cgroup_parent}), flush=True)
os._exit(0)  # as if killed: no stop(), no cleanup
"""


def test_the_next_harness_sweeps_what_a_killed_run_left(cluster: Cluster) -> None:
    node = cluster.nodes[1]
    conflist = _bridge_conflist(Path("@BASE@") / "ipam")
    conflist["plugins"] = conflist["plugins"][:1]
    conflist["plugins"][0]["bridge"] = "cni9"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, node.netns_path, json.dumps(conflist)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    left = json.loads(proc.stdout.strip().splitlines()[-1])
    base = Path(left["base"])
    try:
        assert base.exists() and leftovers.alive(left["pid"]), "the killed run left containerd behind"

        with Containerd(netns_path=node.netns_path) as runtime:
            assert runtime.layout.base != base

        assert not leftovers.alive(left["pid"]) and not leftovers.alive(left["pod_pid"])
        assert not base.exists()
        assert str(base) not in Path("/proc/self/mountinfo").read_text()
        assert not any(Path("/sys/fs/cgroup").glob(f"*/{left['cgroup'].strip('/')}"))
    finally:
        leftovers.clean(base, cgroup_parent=left["cgroup"])  # whatever the sweep missed
