"""The arm64 image (`nox -s image -- --arch arm64`), run on this amd64 machine under qemu-user emulation:
its root file system unpacked from the OCI archive, then, chrooted into it, `aws-cni VERSION` and the agent's
self-check (`aws-k8s-agent --version`: every native extension of its aarch64 wheels loads). And its
standalone aws-cni, installed into a root with no Python and no C library, answers there too.

Skipped, saying why, when the archive is not built or this machine cannot run arm64 programs.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from vpccni.cniplugin import install
from vpccni.testbed import bareroot, ociunpack

ROOT = Path(__file__).resolve().parents[2]
VERSION = yaml.safe_load((ROOT / "deploy" / "charts" / "aws-vpc-cni" / "Chart.yaml").read_text())[
    "appVersion"
]
ARCHIVE = ROOT / "out" / f"vpccni-aws-node-{VERSION}-arm64.oci.tar"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
EM_AARCH64 = 183  # ELF e_machine


def _emulation() -> str | None:
    """Why arm64 programs cannot run here, or None when they can."""
    if platform.machine() == "aarch64":
        return None
    if not BINFMT.exists():
        return f"{BINFMT} is missing: scripts/bootstrap.sh registers qemu-user-static's aarch64 handler"
    text = BINFMT.read_text()
    if not text.startswith("enabled"):
        return f"{BINFMT} is disabled: update-binfmts --enable qemu-aarch64"
    return None


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root"),
    pytest.mark.skipif(
        not ARCHIVE.exists(), reason=f"{ARCHIVE.name} is not built: nox -s image -- --arch arm64"
    ),
    pytest.mark.skipif(_emulation() is not None, reason=str(_emulation())),
]


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-arm64-") as tmp:
        root = Path(tmp) / "root"
        config = ociunpack.unpack(ARCHIVE, root, architecture="arm64")
        assert (config["architecture"], config["os"]) == ("arm64", "linux")
        yield root


def _machine(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[18:20], "little")


def _in_root(
    root: Path, argv: list[str], env: dict[str, str], stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bareroot.chroot_argv(root, argv), env=env, input=stdin.decode(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_the_image_is_arm64_through_and_through(image_root: Path) -> None:
    python = (image_root / "usr" / "bin" / "python3").resolve()
    assert _machine(python) == EM_AARCH64
    runtime = image_root / "app" / install.RUNTIME_DIR / install.runtime_of(image_root / "app", "aws-cni")  # type: ignore[operator]
    for binary in ("aws-cni", "bin/python3", "lib/ld.so", "lib/libc.so.6"):
        assert _machine(runtime / binary) == EM_AARCH64, binary


def test_aws_cni_version_under_emulation(image_root: Path) -> None:
    proc = _in_root(image_root, ["/app/aws-cni"], {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["cniVersion"] == "1.0.0"


def test_the_agents_self_check_under_emulation(image_root: Path) -> None:
    proc = _in_root(
        image_root, ["/app/aws-k8s-agent", "--version"], {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = proc.stdout.splitlines()[-2:]
    assert first == f"aws-k8s-agent v{VERSION} (vpccni): Python 3.11.2 on Linux aarch64"
    assert second.startswith("self-check ok:") and "grpc._cython.cygrpc" in second


def test_its_standalone_aws_cni_needs_no_python_and_no_c_library(image_root: Path, tmp_path: Path) -> None:
    bare = bareroot.make_root(tmp_path / "bare")
    install.install(image_root / "app", bare / bareroot.CNI_BIN)
    assert bareroot.host_runtime(bare) == []
    proc = _in_root(bare, ["/opt/cni/bin/aws-cni"], {"CNI_COMMAND": "VERSION"}, b"{}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1.1.0" in json.loads(proc.stdout)["supportedVersions"]
