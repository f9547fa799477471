"""The built image, run as the aws-node pod runs it: containerd (CRI) inside a testbed node namespace starts a
host-network pod from `out/vpccni-aws-node-<version>.oci.tar` with the DaemonSet's init container and aws-node
container (same commands, security contexts and mounts as `deploy/aws-k8s-cni.yaml`, host paths mapped to
temporary directories). Then the same containerd, reading the CNI bin and conf dirs the pod installed into,
runs an ordinary pod through the installed `aws-cni` and the containerised ipamd (and the installed files,
copied into a root with no Python and no C library, answer VERSION there). Then an upgrade: the
aws-node container is stopped and a new one started while the pod runs; the pod keeps its address and an
open connection to it, and the next pod gets another address.

Build the image first (`nox -s image`); without it the test is skipped and says so.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc
from vpccni.testbed import bareroot
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.cri import Containerd, CriClient, CriError, PodSpec
from vpccni.testbed.datapath import namespaces

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "aws-k8s-cni.yaml"
VERSION = yaml.safe_load((ROOT / "deploy" / "charts" / "aws-vpc-cni" / "Chart.yaml").read_text())[
    "appVersion"
]
ARCHIVE = ROOT / "out" / f"vpccni-aws-node-{VERSION}.oci.tar"
IMAGE = f"localhost/vpccni/aws-node:{VERSION}"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root"),
    pytest.mark.skipif(not ARCHIVE.exists(), reason=f"{ARCHIVE.name} is not built: run `nox -s image`"),
]


def _daemonset_pod() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]


class PodRunner:
    """CreateContainer / StartContainer / ContainerStatus in one host-network sandbox, as kubelet would."""

    def __init__(self, socket: Path, *, cgroup_parent: str, log_dir: Path) -> None:
        self._channel = grpc.insecure_channel(f"unix://{socket}")
        self._rt = cri_grpc.RuntimeServiceStub(self._channel)
        self._cgroup_parent = cgroup_parent
        self._log_dir = log_dir
        self.sandbox_id = ""
        self._config: Any = None

    def close(self) -> None:
        self._channel.close()

    def run_sandbox(self, name: str) -> None:
        host_network = cri.NamespaceOption(network=cri.NODE)
        self._config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, namespace="kube-system", uid=f"uid-{name}"),
            log_directory=str(self._log_dir),
            linux=cri.LinuxPodSandboxConfig(
                cgroup_parent=self._cgroup_parent,
                security_context=cri.LinuxSandboxSecurityContext(
                    namespace_options=host_network, privileged=True
                ),
            ),
        )
        reply = self._rt.RunPodSandbox(cri.RunPodSandboxRequest(config=self._config), timeout=120)
        self.sandbox_id = reply.pod_sandbox_id

    def start(
        self, spec: dict[str, Any], *, env: dict[str, str], mounts: dict[str, Path], attempt: int = 0
    ) -> str:
        """Start the manifest's container `spec` with `env`, each container path mounted from a host path;
        `attempt` > 0 is kubelet starting the container again in the same pod (an upgrade or a restart)."""
        security = spec.get("securityContext", {})
        context = cri.LinuxContainerSecurityContext(
            privileged=bool(security.get("privileged", False)),
            capabilities=cri.Capability(add_capabilities=security.get("capabilities", {}).get("add", [])),
            namespace_options=cri.NamespaceOption(network=cri.NODE),
        )
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=spec["name"], attempt=attempt),
            image=cri.ImageSpec(image=IMAGE),
            command=spec.get("command", []),
            envs=[cri.KeyValue(key=k, value=v) for k, v in env.items()],
            mounts=[cri.Mount(container_path=c, host_path=str(h)) for c, h in mounts.items()],
            log_path=f"{spec['name']}.log" if attempt == 0 else f"{spec['name']}.{attempt}.log",
            linux=cri.LinuxContainerConfig(security_context=context),
        )
        request = cri.CreateContainerRequest(
            pod_sandbox_id=self.sandbox_id, config=config, sandbox_config=self._config
        )
        container_id = self._rt.CreateContainer(request, timeout=120).container_id
        self._rt.StartContainer(cri.StartContainerRequest(container_id=container_id), timeout=120)
        return str(container_id)

    def status(self, container_id: str) -> Any:
        request = cri.ContainerStatusRequest(container_id=container_id)
        return self._rt.ContainerStatus(request, timeout=30).status

    def wait_exit(self, container_id: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(container_id)
            if st.state == cri.CONTAINER_EXITED:
                return int(st.exit_code)
            time.sleep(0.2)
        raise AssertionError(f"container {container_id} still runs after {timeout}s")

    def stop(self, container_id: str, grace_s: int) -> None:
        self._rt.StopContainer(
            cri.StopContainerRequest(container_id=container_id, timeout=grace_s), timeout=120
        )

    def log(self, name: str) -> str:
        path = self._log_dir / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else "(no log)"


@pytest.fixture
def node() -> Iterator[Node]:
    cluster = Cluster(ClusterConfig())
    try:
        cluster.start()
        yield cluster.add_node()
    finally:
        cluster.stop()


def _wait_for(what: str, predicate: Any, timeout: float, diagnostics: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen in {timeout}s\n{diagnostics()}")


def test_the_image_installs_and_serves_pods_like_aws_node(node: Node) -> None:
    pod_spec = _daemonset_pod()
    (init_spec,) = pod_spec["initContainers"]
    node_spec = next(c for c in pod_spec["containers"] if c["name"] == "aws-node")
    manifest_env = {e["name"]: e["value"] for e in node_spec["env"] if "value" in e}
    mount_paths = {m["name"]: m["mountPath"] for m in node_spec["volumeMounts"]}

    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-img-") as tmp, contextlib.ExitStack() as stack:
        host = Path(tmp)
        dirs = {name: host / name for name in ("bin", "net.d", "log", "run", "pod-logs")}
        for d in dirs.values():
            d.mkdir()
        lock = host / "xtables.lock"
        lock.touch()
        containerd = stack.enter_context(
            Containerd(netns_path=node.netns_path, cni_bin_dir=dirs["bin"], cni_conf_dir=dirs["net.d"])
        )
        subprocess.run(
            ["ctr", "--address", str(containerd.socket), "-n", "k8s.io", "images", "import",
             "--all-platforms", "--base-name", IMAGE.rsplit(":", 1)[0], str(ARCHIVE)],
            check=True, capture_output=True,
        )  # fmt: skip
        runner = PodRunner(
            containerd.socket, cgroup_parent=containerd.cgroup_parent, log_dir=dirs["pod-logs"]
        )
        stack.callback(runner.close)
        runner.run_sandbox("aws-node-test")

        # The init container: plugins and shim into the host CNI bin dir, sysctls in the node namespace.
        init_id = runner.start(
            init_spec, env={e["name"]: e["value"] for e in init_spec["env"]} | node.env(),
            mounts={"/host/opt/cni/bin": dirs["bin"]},
        )  # fmt: skip
        assert runner.wait_exit(init_id, 120) == 0, runner.log(init_spec["name"])
        installed = {p.name for p in dirs["bin"].iterdir()}
        assert {"aws-cni", ".vpccni", "loopback", "portmap", "bandwidth", "host-local"} <= installed
        _assert_runs_without_python(dirs["bin"], host / "bare-root")
        ip_forward = subprocess.run(
            ["nsenter", f"--net={node.netns_path}", "cat", "/proc/sys/net/ipv4/ip_forward"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert ip_forward == "1"

        # The aws-node container: the manifest's env and capabilities; the run dir is mounted at the same path
        # inside and outside, so the conflist's cniSocket is right for the host's shim too.
        env = (
            manifest_env
            | node.env()
            | {
                "VPCCNI_RUN_DIR": str(dirs["run"]),
                "AWS_VPC_K8S_CNI_BACKING_STORE": str(dirs["run"] / "ipam.json"),
                "AWS_VPC_K8S_PLUGIN_LOG_FILE": str(dirs["log"] / "plugin.log"),
                "MY_POD_NAME": "aws-node-test",
            }
        )
        mounts = {
            mount_paths["cni-bin-dir"]: dirs["bin"],
            mount_paths["cni-net-dir"]: dirs["net.d"],
            mount_paths["log-dir"]: dirs["log"],
            str(dirs["run"]): dirs["run"],
            mount_paths["xtables-lock"]: lock,
        }
        node_id = runner.start(node_spec, env=env, mounts=mounts)
        conflist = dirs["net.d"] / "10-aws.conflist"

        def diagnostics() -> str:
            ipamd_log = dirs["log"] / "ipamd.log"
            tail = ipamd_log.read_text()[-3000:] if ipamd_log.exists() else "(no ipamd.log)"
            return f"--- aws-node container log\n{runner.log('aws-node')}\n--- ipamd.log\n{tail}"

        _wait_for("10-aws.conflist", conflist.exists, 180, diagnostics)
        plugin = json.loads(conflist.read_text())["plugins"][0]
        assert plugin["cniSocket"] == str(dirs["run"] / "cni.sock")
        assert runner.status(node_id).state == cri.CONTAINER_RUNNING

        # The probe the manifest runs, inside the container, answers SERVING.
        probe = node_spec["readinessProbe"]["exec"]["command"]
        probe = [probe[0], f"-addr=unix://{dirs['run'] / 'ipamd.sock'}", *probe[2:]]
        reply = cri_grpc.RuntimeServiceStub(grpc.insecure_channel(f"unix://{containerd.socket}")).ExecSync(
            cri.ExecSyncRequest(container_id=node_id, cmd=probe, timeout=30), timeout=60
        )
        assert reply.exit_code == 0, reply.stderr

        # An ordinary pod through the installed aws-cni and the containerised ipamd.
        with CriClient(socket=containerd.socket, cgroup_parent=containerd.cgroup_parent) as pods:
            _wait_for("NetworkReady", lambda: pods.conditions().get("NetworkReady"), 30, diagnostics)
            deadline = time.monotonic() + 90
            while True:
                try:
                    sandbox_id = pods.run_pod(PodSpec(name="web"))
                    break
                except CriError as err:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{err}\n{diagnostics()}") from err
                    time.sleep(1)
            sandbox = pods.status(sandbox_id)
            assert sandbox.ready and sandbox.ip is not None and sandbox.netns_path is not None
            assert sandbox.ip in ipaddress.ip_network("10.0.0.0/16"), sandbox.ip

            # An upgrade: the aws-node container goes away and a new one starts while the pod runs. The pod
            # keeps its address (the checkpoint) and an open connection to it keeps working.
            conn = stack.enter_context(_open_echo_connection(node, sandbox.netns_path, sandbox.ip))
            assert _echo(conn, b"before") == b"before"
            runner.stop(node_id, grace_s=30)
            assert runner.wait_exit(node_id, 60) == 0, diagnostics()
            assert _echo(conn, b"while aws-node is down") == b"while aws-node is down"
            new_id = runner.start(node_spec, env=env, mounts=mounts, attempt=1)
            serving = lambda: _probe_ok(containerd, new_id, probe)  # noqa: E731
            _wait_for("the new aws-node to serve", serving, 120, diagnostics)
            node_id = new_id
            assert _echo(conn, b"after") == b"after"
            checkpoint = json.loads((dirs["run"] / "ipam.json").read_text())
            checkpointed = {a["ipv4"] for a in checkpoint["allocations"]}
            assert checkpointed == {str(sandbox.ip)}, checkpointed
            second_id = pods.run_pod(PodSpec(name="web2"))
            second = pods.status(second_id)
            assert second.ip is not None and second.ip != sandbox.ip, "an address is never given twice"
            for pod_id in (second_id, sandbox_id):
                pods.stop_pod(pod_id)
                pods.remove_pod(pod_id)

        # SIGTERM reaches ipamd through the entrypoint, which exits with ipamd's status.
        runner.stop(node_id, grace_s=30)
        assert runner.wait_exit(node_id, 60) == 0, diagnostics()


def _assert_runs_without_python(cni_bin: Path, root_dir: Path) -> None:
    """The image's aws-cni as its init container installed it is standalone: copied into a root with no
    python3 and no C library, it answers VERSION."""
    assert os.readlink(cni_bin / "aws-cni").startswith(".vpccni/")
    root = bareroot.make_root(root_dir)
    shutil.copytree(cni_bin, root / bareroot.CNI_BIN, symlinks=True, dirs_exist_ok=True)
    assert bareroot.host_runtime(root) == []
    proc = subprocess.run(
        bareroot.chroot_argv(root, ["/opt/cni/bin/aws-cni"]), env={"CNI_COMMAND": "VERSION"},
        input=b"{}", capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0.4.0" in json.loads(proc.stdout)["supportedVersions"]


def _probe_ok(containerd: Containerd, container_id: str, probe: list[str]) -> bool:
    stub = cri_grpc.RuntimeServiceStub(grpc.insecure_channel(f"unix://{containerd.socket}"))
    try:
        request = cri.ExecSyncRequest(container_id=container_id, cmd=probe, timeout=10)
        reply = stub.ExecSync(request, timeout=30)
    except grpc.RpcError:
        return False
    return reply.exit_code == 0


@contextlib.contextmanager
def _open_echo_connection(node: Node, pod_netns: Path, ip: ipaddress.IPv4Address) -> Iterator[socket.socket]:
    """A connection from the node to an echo server in the pod that answers every message on it."""
    listener = namespaces.listen_tcp(str(pod_netns.resolve()), str(ip), 0)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    client = namespaces.connect_tcp(node.netns, str(ip), listener.getsockname()[1], timeout=10)
    try:
        yield client
    finally:
        client.close()
        listener.close()


def _echo(conn: socket.socket, message: bytes) -> bytes:
    conn.sendall(message)
    return conn.recv(4096)
