"""The image's build context (what can be checked without building it) and the iptables backend choice."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from vpccni.cniplugin.standalone import CC, CC_FLAGS, TRAMPOLINE_FILES, TRAMPOLINE_SOURCES
from vpccni.ipamd.install.conflist import ConflistOptions, conflist_bytes
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "deploy" / "image"
CONTAINERFILE = (IMAGE / "Containerfile").read_text()


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image-context")
    subprocess.run([sys.executable, str(IMAGE / "stage.py"), str(out), "--no-wheels"], check=True)
    return out


def _image_path(context: Path, path: str) -> Path:
    """Where a path of the final image comes from in the staged context (rootfs/ and generated/app/)."""
    for base in (context / "rootfs", context / "generated"):
        candidate = base / path.lstrip("/")
        if candidate.exists():
            return candidate
    raise AssertionError(f"{path} is not in the image")


def test_every_copy_source_is_staged(context: Path) -> None:
    sources = re.findall(r"^COPY\s+(\S+)\s+\S+$", CONTAINERFILE, re.MULTILINE)
    assert sources == ["generated/trampoline/", "wheels/", "rootfs/", "generated/app/"]
    for source in sources:
        if source != "wheels/":  # wheels need the package index: covered by build.sh
            assert (context / source).exists(), source
    assert (context / "Containerfile").read_text() == CONTAINERFILE
    # The only other COPY takes the trampoline from the stage that compiled it.
    assert re.findall(r"^COPY --from=(\S+) ", CONTAINERFILE, re.MULTILINE) == ["trampoline"]


def test_the_commands_the_manifest_runs_exist_and_name_real_modules(context: Path) -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "aws-k8s-cni.yaml").read_text()))
    pod = next(d for d in docs if d and d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    commands = [pod["initContainers"][0]["command"][0]]
    node = pod["containers"][0]
    commands += [node[p]["exec"]["command"][0] for p in ("livenessProbe", "readinessProbe")]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", CONTAINERFILE, re.MULTILINE).group(1))  # type: ignore[union-attr]
    commands += [*entrypoint, "/app/aws-k8s-agent", "/app/vpccni"]
    helper = yaml.safe_load_all((ROOT / "deploy" / "cni-metrics-helper.yaml").read_text())
    deployment = next(d for d in helper if d and d["kind"] == "Deployment")
    commands += deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    agent = next(c for c in pod["containers"] if c["name"] == "aws-eks-nodeagent")
    commands += [agent["command"][0], "/app/vpccni-netpol-controller"]
    for command in commands:
        wrapper = _image_path(context, command)
        assert os.access(wrapper, os.X_OK), command
        exec_line = next(line for line in wrapper.read_text().splitlines() if line.startswith("exec "))
        argv = shlex.split(exec_line)
        assert argv[1] == "/opt/vpccni/bin/python" and argv[2] == "-m"
        assert importlib.util.find_spec(argv[3]) is not None, f"{command} runs a missing module {argv[3]}"


def test_the_probe_wrapper_speaks_grpc_health_probe(context: Path, tmp_path: Path) -> None:
    wrapper = _image_path(context, "/app/grpc-health-probe").read_text()
    local = tmp_path / "grpc-health-probe"
    local.write_text(wrapper.replace("/opt/vpccni/bin/python", sys.executable))
    local.chmod(0o755)
    sock = tmp_path / "absent.sock"
    proc = subprocess.run([str(local), f"-addr=unix://{sock}", "-connect-timeout=100ms"], capture_output=True)
    assert proc.returncode == 2  # grpc-health-probe's "connection failed"


def test_the_standalone_shim_is_built_in_the_image_from_the_staged_trampoline(context: Path) -> None:
    for source in TRAMPOLINE_FILES:
        assert (context / "generated" / "trampoline" / source.name).read_bytes() == source.read_bytes()
    # The trampoline stage compiles it as the standalone builder would (one set of flags, every source).
    gcc = re.search(
        r"^ && (\S+) (.*) -o /src/trampoline ((?:\S+ \\\n\s*|\S+ ?)+)$", CONTAINERFILE, re.MULTILINE
    )
    assert gcc is not None and (gcc.group(1), tuple(gcc.group(2).split())) == (CC, CC_FLAGS)
    compiled = [word for word in gcc.group(3).split() if word != "\\"]
    assert compiled == [f"/src/{source.name}" for source in TRAMPOLINE_SOURCES]
    assert "-m vpccni.cniplugin.standalone /app --python /usr/bin/python3" in CONTAINERFILE
    # The image checks its own aws-cni and agent run (under emulation too, for another architecture).
    assert "/app/aws-cni </dev/null 2>&1 | grep -q vpccni" in CONTAINERFILE
    assert CONTAINERFILE.rstrip().splitlines()[-4] == " && /app/aws-k8s-agent --version"


def test_reference_files(context: Path) -> None:
    app = context / "generated" / "app"
    # The reference conflist is what the entrypoint writes for default settings.
    assert ConflistOptions() == WiringPlan.from_settings(load_settings({})).install.conflist
    assert (app / "10-aws.conflist").read_bytes() == conflist_bytes(ConflistOptions())
    assert "m5.large 29" in (app / "eni-max-pods.txt").read_text().splitlines()


def test_wheels_for_another_architecture_are_every_manylinux_the_images_glibc_runs() -> None:
    stage = _load_stage()
    args = stage.platform_args("arm64" if stage.host_arch() == "amd64" else "amd64")
    machine = "aarch64" if stage.host_arch() == "amd64" else "x86_64"
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert f"manylinux2014_{machine}" in platforms and f"manylinux_2_36_{machine}" in platforms
    assert f"manylinux_2_37_{machine}" not in platforms  # Debian 12's glibc is 2.36
    assert args[args.index("--python-version") + 1] == "3.11"
    assert stage.platform_args(stage.host_arch()) == []  # this machine's: pip's own choice


def _load_stage() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("vpccni_stage", IMAGE / "stage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_backends(tmp_path: Path, rules: dict[str, str]) -> dict[str, str]:
    """PATH with stand-in `*-save` commands printing the given rules (never the machine's iptables)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for backend in ("legacy", "nft"):
        for family in ("iptables", "ip6tables"):
            script = bin_dir / f"{family}-{backend}-save"
            body = rules.get(backend, "") if family == "iptables" else ""
            script.write_text(f"#!/bin/sh\ncat <<'X'\n{body}\nX\n")
            script.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "IPTABLES_WRAPPER_DRY_RUN": "1"}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"legacy": "-A POSTROUTING -j KUBE-POSTROUTING\n-A KUBE-SERVICES -j RETURN"}, "legacy"),
        ({"nft": "-A POSTROUTING -j KUBE-POSTROUTING"}, "nft"),
        ({}, "nft"),
        ({"legacy": "-A A -j B\n-A C -j D", "nft": ":KUBE-IPTABLES-HINT - [0:0]"}, "nft"),
        ({"legacy": ":KUBE-KUBELET-CANARY - [0:0]", "nft": "-A A -j B\n-A C -j D"}, "legacy"),
    ],
)
def test_iptables_wrapper_follows_the_hosts_backend(
    tmp_path: Path, rules: dict[str, str], expected: str
) -> None:
    wrapper = IMAGE / "rootfs" / "usr" / "sbin" / "iptables-wrapper"
    proc = subprocess.run(
        ["/bin/sh", str(wrapper), "-L"], env=_fake_backends(tmp_path, rules), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_build_sh_builds_the_containerfile_from_its_own_base() -> None:
    """One source of truth: build.sh stages the context and hands the Containerfile its BASE, nothing else."""
    script = (IMAGE / "build.sh").read_text()
    assert re.search(r"^ARG BASE=\S+$", CONTAINERFILE, re.MULTILINE)
    assert re.findall(r"^FROM (\S+)", CONTAINERFILE, re.MULTILINE) == ["${BASE}", "${BASE}"]
    assert '--build-arg "BASE=$BASE"' in script
    assert '-f "$CONTEXT/Containerfile"' in script
    assert "deploy/image/stage.py" in script
    # Every step of the image is in the Containerfile: the script runs no command inside the image.
    assert "buildah run" not in script and "bh run" not in script


def test_build_sh_refuses_an_unknown_architecture_before_doing_anything() -> None:
    argv = ["bash", str(IMAGE / "build.sh"), "--arch", "s390x"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "build.sh: unsupported architecture s390x (amd64 or arm64)"
