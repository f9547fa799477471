"""containerd with its CRI plugin as a real CNI client of the installed aws-cni (see containerd-cri.md).

Everything lives under one private directory: containerd's root, state, socket, the CNI bin and conf
dirs. containerd and the shims it starts are stopped by PID; pods' namespaces are containerd's own, the
"host" side of the wiring is a node namespace the test creates, never the machine's.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from cri_api.v1 import api_pb2_grpc

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
SANDBOX_IMAGE = "docker.io/library/vpccni-pause:latest"

CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
"""


@dataclass
class Containerd:
    dir: pathlib.Path
    pid: int
    runtime: api_pb2_grpc.RuntimeServiceStub

    @property
    def bin_dir(self) -> pathlib.Path:
        return self.dir / "cni-bin"

    @property
    def conf_dir(self) -> pathlib.Path:
        return self.dir / "net.d"


def _shim_pids(address: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address.encode() in argv:
            pids.append(int(entry))
    return pids


def _wait_for(path: pathlib.Path, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"containerd did not create {path} (exit {proc.poll()})")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    if os.geteuid() != 0:
        pytest.skip("the e2e tier needs root")
    if not os.path.exists(CONTAINERD):
        pytest.skip("containerd is not installed")
    from vpccni.testbed.cri.image import SandboxImage, write_image_layout

    had_run_containerd = os.path.exists("/run/containerd")
    had_cgroups = set(_k8s_cgroups())
    d = pathlib.Path(tempfile.mkdtemp(prefix="vpccni-e2e-"))
    (d / "cni-bin").mkdir()
    (d / "net.d").mkdir()
    # containerd sets up the pod's loopback with the reference plugin.
    os.symlink("/usr/lib/cni/loopback", d / "cni-bin" / "loopback")
    (d / "config.toml").write_text(CONFIG.format(d=d, image=SANDBOX_IMAGE))
    log = open(d / "containerd.log", "wb")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen([CONTAINERD, "--config", str(d / "config.toml")], stdout=log, stderr=log)
    address = str(d / "containerd.sock")
    try:
        _wait_for(d / "containerd.sock", proc, 30)
        image = write_image_layout(SandboxImage(reference=SANDBOX_IMAGE), d / "pause.tar")
        subprocess.run(
            [CTR, "--address", address, "-n", "k8s.io", "images", "import", "--all-platforms", str(image)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        with grpc.insecure_channel(f"unix://{address}") as channel:
            yield Containerd(dir=d, pid=proc.pid, runtime=api_pb2_grpc.RuntimeServiceStub(channel))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in _shim_pids(address):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        _unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)
        if not had_run_containerd:
            _remove_empty_dirs(pathlib.Path("/run/containerd"))
        for cgroup in set(_k8s_cgroups()) - had_cgroups:
            try:
                cgroup.rmdir()  # only succeeds when no sandbox cgroup is left below it
            except OSError:
                pass


def _k8s_cgroups() -> list[pathlib.Path]:
    """The per-controller parent cgroups runc makes for containerd's k8s.io namespace."""
    return list(pathlib.Path("/sys/fs/cgroup").glob("*/k8s.io"))


def _unmount_under(d: pathlib.Path) -> None:
    """Pod netns bind mounts and snapshot mounts containerd may have left under our directory."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(str(d))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_empty_dirs(root: pathlib.Path) -> None:
    if not root.exists():
        return
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()
            except OSError:
                pass
    try:
        root.rmdir()
    except OSError:
        pass
