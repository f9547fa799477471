"""Stage the image build context: everything the Containerfile COPYs, in one directory.

    python deploy/image/stage.py OUT [--wheels DIST] [--no-wheels]

OUT/rootfs/      deploy/image/rootfs as is (entrypoint wrappers, init, grpc-health-probe, iptables-wrapper)
OUT/generated/app/
    aws-cni            the single-file shim (vpccni.cniplugin.bundle)
    10-aws.conflist    the conflist for default settings (reference copy, as upstream ships; the entrypoint
                       renders the real one from the environment)
    eni-max-pods.txt   max pods per instance type (vpccni.ipamd.install.maxpods)
OUT/wheels/      the vpccni wheels from DIST (`nox -s build`) and every dependency's wheel, so the image
                 installs with `pip --no-index` and needs no package index while it builds

The build (Docker, Podman or deploy/image/build.sh with buildah) then runs with OUT as its context.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from vpccni.cniplugin.bundle import build as build_shim
from vpccni.ipamd.install.conflist import CONFLIST_NAME, ConflistOptions, conflist_bytes
from vpccni.ipamd.install.maxpods import render_eni_max_pods

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# The test bed is development-only: it never goes into the image.
IMAGE_DISTRIBUTIONS = ("vpccni_rpc", "vpccni_awsutils", "vpccni_networkutils", "vpccni_k8sapi",
                       "vpccni_cni_plugin", "vpccni_ipamd")  # fmt: skip


def stage_app(out: Path) -> Path:
    app = out / "generated" / "app"
    app.mkdir(parents=True, exist_ok=True)
    build_shim(app / "aws-cni")
    (app / CONFLIST_NAME).write_bytes(conflist_bytes(ConflistOptions()))
    (app / "eni-max-pods.txt").write_text(render_eni_max_pods())
    return app


def stage_rootfs(out: Path) -> Path:
    target = out / "rootfs"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(HERE / "rootfs", target, symlinks=True)
    return target


def stage_wheels(out: Path, dist: Path) -> Path:
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    ours = sorted(w for w in dist.glob("*.whl") if w.name.split("-")[0] in IMAGE_DISTRIBUTIONS)
    missing = set(IMAGE_DISTRIBUTIONS) - {w.name.split("-")[0] for w in ours}
    if missing:
        raise SystemExit(f"{dist} lacks wheels for {sorted(missing)}: run `nox -s build` first")
    for wheel in ours:
        shutil.copy2(wheel, wheels)
    # Binary wheels for the image's interpreter (Debian 12: CPython 3.11, glibc); pip's own config (index,
    # mirrors) applies.
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(wheels),
         *[str(w) for w in ours]],
        check=True,
    )  # fmt: skip
    return wheels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="stage the aws-node image build context")
    p.add_argument("out", type=Path)
    p.add_argument("--wheels", type=Path, default=ROOT / "dist", help="directory of vpccni wheels")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheels (tests of the other parts)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(HERE / "Containerfile", args.out / "Containerfile")
    stage_rootfs(args.out)
    stage_app(args.out)
    if not args.no_wheels:
        stage_wheels(args.out, args.wheels)
    print(f"staged the build context in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
