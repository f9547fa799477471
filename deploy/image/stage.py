"""Stage the image build context: everything the Containerfile COPYs, in one directory.

    python deploy/image/stage.py OUT [--wheels DIST] [--no-wheels] [--arch amd64|arm64 ...]

OUT/rootfs/      deploy/image/rootfs as is (entrypoint wrappers, init, grpc-health-probe, iptables-wrapper)
OUT/generated/app/
    10-aws.conflist    the conflist for default settings (reference copy, as upstream ships; the entrypoint
                       renders the real one from the environment)
    eni-max-pods.txt   max pods per instance type (vpccni.ipamd.install.maxpods)
OUT/generated/trampoline/    the standalone aws-cni's C trampoline (sources and headers); the image compiles
                       it and builds /app/aws-cni with its own interpreter (vpccni.cniplugin.standalone)
OUT/wheels/      the vpccni wheels from DIST (`nox -s build`) and every dependency's wheel for each
                 architecture named (`--arch`, repeatable, default this machine's), so the image installs with
                 `pip --no-index` and needs no package index while it builds; pip picks each platform's own
                 wheels, so one context with both serves `docker buildx --platform linux/amd64,linux/arm64`

The build (Docker, Podman or deploy/image/build.sh with buildah) then runs with OUT as its context.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from vpccni.cniplugin.standalone import TRAMPOLINE_FILES
from vpccni.ipamd.install.conflist import CONFLIST_NAME, ConflistOptions, conflist_bytes
from vpccni.ipamd.install.maxpods import render_eni_max_pods

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# The test bed is development-only: it never goes into the image.
IMAGE_DISTRIBUTIONS = ("vpccni_rpc", "vpccni_awsutils", "vpccni_networkutils", "vpccni_k8sapi",
                       "vpccni_cni_plugin", "vpccni_ipamd", "vpccni_netpol")  # fmt: skip


# The image's interpreter (Debian 12's python3) and C library (glibc 2.36): which binary wheels fit it.
IMAGE_PYTHON = "3.11"
IMAGE_GLIBC_MINOR = 36
# Debian's architecture names and the machine names of wheel tags.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


def stage_app(out: Path) -> Path:
    generated = out / "generated"
    app = generated / "app"
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir(parents=True)
    (app / CONFLIST_NAME).write_bytes(conflist_bytes(ConflistOptions()))
    (app / "eni-max-pods.txt").write_text(render_eni_max_pods())
    trampoline = generated / "trampoline"
    shutil.rmtree(trampoline, ignore_errors=True)
    trampoline.mkdir()
    for source in TRAMPOLINE_FILES:
        shutil.copy2(source, trampoline / source.name)
    return app


def host_arch() -> str:
    machine = platform.machine()
    return next((arch for arch, name in MACHINES.items() if name == machine), machine)


def platform_args(arch: str) -> list[str]:
    """pip's options selecting binary wheels for another architecture: every manylinux tag the image's C
    library satisfies (pip does not infer the older ones from the newest). None for this machine's own."""
    if arch == host_arch():
        return []
    machine = MACHINES[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(17, IMAGE_GLIBC_MINOR + 1)]
    tags.append(f"manylinux2014_{machine}")
    return [
        *(arg for tag in tags for arg in ("--platform", tag)),
        "--python-version", IMAGE_PYTHON, "--implementation", "cp",
    ]  # fmt: skip


def stage_rootfs(out: Path) -> Path:
    target = out / "rootfs"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(HERE / "rootfs", target, symlinks=True)
    return target


def stage_wheels(out: Path, dist: Path, arches: Sequence[str]) -> Path:
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    ours = sorted(w for w in dist.glob("*.whl") if w.name.split("-")[0] in IMAGE_DISTRIBUTIONS)
    missing = set(IMAGE_DISTRIBUTIONS) - {w.name.split("-")[0] for w in ours}
    if missing:
        raise SystemExit(f"{dist} lacks wheels for {sorted(missing)}: run `nox -s build` first")
    for wheel in ours:
        shutil.copy2(wheel, wheels)
    # Binary wheels for the image's interpreter (Debian 12: CPython 3.11, glibc) and architectures; pip's own
    # config (index, mirrors) applies.
    for arch in arches:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", *platform_args(arch),
             "--dest", str(wheels), *[str(w) for w in ours]],
            check=True,
        )  # fmt: skip
    return wheels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="stage the aws-node image build context")
    p.add_argument("out", type=Path)
    p.add_argument("--wheels", type=Path, default=ROOT / "dist", help="directory of vpccni wheels")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheels (tests of the other parts)")
    p.add_argument("--arch", choices=sorted(MACHINES), action="append", help="an image architecture (repeat)")
    args = p.parse_args(argv)
    arches = args.arch or [host_arch()]
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(HERE / "Containerfile", args.out / "Containerfile")
    stage_rootfs(args.out)
    stage_app(args.out)
    if not args.no_wheels:
        stage_wheels(args.out, args.wheels, arches)
    print(f"staged the build context for {', '.join(arches)} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
