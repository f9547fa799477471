"""aws-cni on a host with no Python at all (Bottlerocket's case, at the strictest): a root file system
holding only a static busybox, no python3, no C library, no dynamic loader.

The init step (`vpccni.ipamd.install.init`, what the image's init container runs) installs the standalone
aws-cni into that root's /opt/cni/bin from an image-like /app (built as the image builds it, packing this
machine's Debian 12 python3). A testbed node runs ipamd; pods are then added and deleted by executing the
root's /opt/cni/bin/aws-cni chrooted into it, in the node's namespace, with what a runtime shares with its
plugins (pod netns files, ipamd's socket, the plugin log) mounted at the same paths: ADD gives an address
and connectivity, DEL cleans up, VERSION answers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vpccni.cniplugin import standalone
from vpccni.testbed import bareroot
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import ping
from vpccni.testbed.noderunner import SYSTEM_PYTHON, NodeRunner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root")

IN_ROOT = Path("/") / bareroot.CNI_BIN / "aws-cni"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(ClusterConfig())
    try:
        cluster.start()
        cluster.add_node()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-nopy-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def root(cluster: Cluster, workdir: Path) -> Path:
    """The bare root, with the init step's install done into its /opt/cni/bin."""
    root = bareroot.make_root(workdir / "root")
    app = workdir / "app"
    standalone.build(app, python=SYSTEM_PYTHON)
    node = cluster.nodes[0]
    proc = subprocess.run(
        ["ip", "netns", "exec", node.netns, sys.executable, "-m", "vpccni.ipamd.install.init",
         "--plugins-dir", "/usr/lib/cni", "--app-dir", str(app)],
        env={**node.env(), "PATH": os.environ["PATH"], "HOST_CNI_BIN_PATH": str(root / bareroot.CNI_BIN)},
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


@pytest.fixture(scope="module")
def runner(cluster: Cluster, workdir: Path, root: Path) -> Iterator[NodeRunner]:
    node = cluster.nodes[0]
    shared = [ns.NETNS_DIR, workdir / node.name]  # pod netns files; ipamd's run dir and the plugin log
    runner = NodeRunner(
        node=node, workdir=workdir / node.name, shim=root / bareroot.CNI_BIN / "aws-cni",
        shim_command=bareroot.chroot_argv(root, [str(IN_ROOT)], binds=shared),
    )  # fmt: skip
    try:
        runner.start()
        yield runner
    finally:
        runner.close()


def test_the_root_has_no_python_and_no_c_library(root: Path) -> None:
    assert bareroot.host_runtime(root) == []
    assert bareroot.program_interpreter(root / "bin" / "busybox") is None
    for directory in ("bin", "sbin", "usr/bin", "usr/local/bin"):
        assert not (root / directory / "python3").exists()
    installed = root / bareroot.CNI_BIN
    assert os.readlink(installed / "aws-cni").startswith(".vpccni/")
    # What runs first in it needs no loader from the root.
    assert bareroot.program_interpreter(installed / "aws-cni") is None


@pytest.mark.parametrize("with_proc", [True, False], ids=["with-proc", "without-proc"])
def test_version_answers_inside_the_root(root: Path, with_proc: bool) -> None:
    """Without /proc the trampoline finds its directory from argv[0] (runtimes pass the full path)."""
    proc = subprocess.run(
        bareroot.chroot_argv(root, [str(IN_ROOT)], proc=with_proc), env={"CNI_COMMAND": "VERSION"},
        input=b'{"cniVersion": "0.4.0"}', capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "cniVersion": "0.4.0",
        "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


def _host_veth(namespace: str, name: str) -> str:
    return "eni" + hashlib.sha1(f"{namespace}.{name}".encode()).hexdigest()[:11]


def test_no_python_host_adds_and_deletes_pods(cluster: Cluster, runner: NodeRunner) -> None:
    node = cluster.nodes[0]
    pods = [runner.create_pod(namespace="nopy", name=f"web-{i}") for i in range(2)]
    ips = []
    for pod in pods:
        added = runner.add(pod)
        assert added.ok, f"{added.error}\n{runner.log_tail()}"
        ips.append(ipaddress.IPv4Interface(added.document["ips"][0]["address"]).ip)
    assert len(set(ips)) == 2 and all(ip in node.instance.subnet_cidr for ip in ips)
    assert ping(pods[0].netns, ips[1]), "pod to pod"
    assert ping(pods[0].netns, cluster.vpc_host_ip), "pod to a VPC host"
    assert runner.check(pods[0]).ok

    for pod, ip in zip(pods, ips, strict=True):
        deleted = runner.delete(pod)
        assert deleted.ok, deleted.error
        assert runner.delete(pod).ok, "a repeated DEL succeeds"
        rules = ns.exec_in_netns(node.netns, ["ip", "rule", "show"])
        assert f"{ip} " not in rules.replace("\n", " "), rules
        runner.remove_pod(pod)
        # The veth dies with the pod's namespace, which the kernel destroys asynchronously.
        veth = _host_veth(pod.namespace, pod.name)
        deadline = time.monotonic() + 10
        while veth in node.network.links() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert veth not in node.network.links()
    assert runner.introspect("/v1/enis")["0"]["AssignedIPs"] == 0
    # Every call went through the chrooted executable: its log is the plugin log ipamd's conflist names.
    done = [json.loads(line)["command"] for line in runner.plugin_log.read_text().splitlines()
            if json.loads(line).get("msg") == "done"]  # fmt: skip
    assert done.count("ADD") == 2 and done.count("DEL") == 4
