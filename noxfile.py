"""Cross-package sessions for the vpccni monorepo.

Sessions run in the virtualenv made by ``scripts/bootstrap.sh`` (``.venv``), where every package is
installed in development mode, so a session costs no install time and all sessions test the same code.
"""

from __future__ import annotations

import os
import pathlib
import sys

import nox

nox.needs_version = ">=2024.10"
nox.options.default_venv_backend = "none"
DEFAULT = ["lint", "types", "unit", "netns", "integration", "chaos", "build", "image", "image_arm64", "e2e"]
nox.options.sessions = DEFAULT

ROOT = pathlib.Path(__file__).parent
PACKAGES = sorted(p.parent for p in ROOT.glob("packages/*/pyproject.toml"))
PY = sys.executable


def _pytest(session: nox.Session, marker: str, *extra: str) -> None:
    paths = [str(p / "tests") for p in PACKAGES] + [str(ROOT / "tests")]
    session.run(PY, "-m", "pytest", "-m", marker, *paths, *extra, *session.posargs)


def _need_root(session: nox.Session) -> None:
    if os.geteuid() != 0:
        session.error("this session needs root: it creates network namespaces")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over every package, plus the layering contract (import-linter)."""
    paths = ("packages", "tests", "deploy", "scripts", "noxfile.py", "conftest.py")
    session.run(PY, "-m", "ruff", "check", *paths)
    session.run(str(pathlib.Path(PY).parent / "lint-imports"), "--config", str(ROOT / "pyproject.toml"))
    # Generated files must match their sources: gRPC stubs, the limits table, the configuration reference,
    # the trimmed EC2 model awsutils loads, the Grafana dashboard.
    generators = ("codegen.py", "gen_limits.py", "gen_config_docs.py", "gen_ec2_model.py", "gen_dashboard.py")
    for script in generators:
        session.run(PY, str(ROOT / "scripts" / script), "--check")
    # The Helm charts, with the real helm (scripts/bootstrap.sh unpacks it into .venv/opt/k8s-tools).
    helm = pathlib.Path(sys.prefix) / "opt" / "k8s-tools" / "helm"
    for chart in sorted((ROOT / "deploy" / "charts").glob("*/Chart.yaml")):
        session.run(str(helm), "lint", "--strict", str(chart.parent), external=True)


@nox.session
def types(session: nox.Session) -> None:
    """mypy over every package's source (one run: the vpccni namespace spans every src/ folder)."""
    srcs = [p / "src" for p in PACKAGES]
    modules = [f"vpccni.{d.name}" for s in srcs for d in sorted((s / "vpccni").iterdir()) if d.is_dir()]
    args = [arg for m in modules if not m.endswith("__pycache__") for arg in ("-p", m)]
    env = {"MYPYPATH": ":".join(str(s) for s in srcs)}
    session.run(PY, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *args, env=env)


@nox.session
def unit(session: nox.Session) -> None:
    """Unit tests: no root, no network."""
    _pytest(session, "unit")


@nox.session
def netns(session: nox.Session) -> None:
    """Real netlink, iptables and nftables inside namespaces each test creates and deletes."""
    _need_root(session)
    _pytest(session, "netns")


@nox.session
def integration(session: nox.Session) -> None:
    """The testbed (EC2, IMDS, Kubernetes API, datapath) with the real aws-k8s-agent process."""
    _need_root(session)
    _pytest(session, "integration")


@nox.session
def e2e(session: nox.Session) -> None:
    """containerd's CRI as the real CNI client of the installed plugin."""
    _need_root(session)
    _pytest(session, "e2e")


@nox.session
def chaos(session: nox.Session) -> None:
    """Reliability: real agents and shims under SIGKILLs, hostile input, local load and cloud faults. The
    default short run fails when an invariant breaks; `-- --full` writes bench/results/reliability.json,
    `-- --soak 3600` is an hour of churn with periodic faults."""
    _need_root(session)
    session.run(PY, "-m", "vpccni.testbed.chaos", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks on the testbed; results go to bench/results/ and docs/benchmarks.md."""
    _need_root(session)
    session.run(PY, "-m", "vpccni.testbed.bench", *session.posargs)
    if "--only" in session.posargs:
        return  # a chosen few scenarios; `nox -s netpol -- speed` measures network policy's alone
    # Network policy's speed figures (bench/results/netpol.json and their section of the page).
    quick = ["--quick"] if "--quick" in session.posargs else []
    session.run(PY, "-m", "vpccni.testbed.netpol", "speed", *quick)


@nox.session(default=False)
def netpol(session: nox.Session) -> None:
    """Network policy: the whole conformance suite and the speed benchmark; bench/results/netpol.json."""
    _need_root(session)
    session.run(PY, "-m", "vpccni.testbed.netpol", *(session.posargs or ["all"]))


@nox.session(default=False)
def fleet(session: nox.Session) -> None:
    """Hundreds of simulated nodes under one account's EC2 limits, vpccni's pacing beside a model of
    upstream's; results go to bench/results/fleet.json and docs/benchmarks.md ("At scale")."""
    session.run(PY, "-m", "vpccni.testbed.fleet", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The simulated cluster demo (the README's first command runs this)."""
    _need_root(session)
    session.run(PY, "-m", "vpccni.testbed.demo", *session.posargs)


@nox.session(default=False)
def codegen(session: nox.Session) -> None:
    """Regenerate the gRPC stubs from rpc.proto; ``-- --check`` fails when the committed ones are stale."""
    session.run(PY, str(ROOT / "scripts" / "codegen.py"), *session.posargs)


@nox.session(default=False)
def limits(session: nox.Session) -> None:
    """Regenerate awsutils' instance-limits table from the instance-type data moto ships."""
    session.run(PY, str(ROOT / "scripts" / "gen_limits.py"), *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build every wheel with poetry and check no path dependency leaked into its METADATA."""
    out = ROOT / "dist"
    session.run(PY, str(ROOT / "scripts" / "build_wheels.py"), str(out))


@nox.session
def image(session: nox.Session) -> None:
    """Build the aws-node image as an OCI archive without a Docker engine (`-- --arch arm64`: for arm64)."""
    _need_root(session)
    session.run("bash", str(ROOT / "deploy" / "image" / "build.sh"), *session.posargs, external=True)


@nox.session
def image_arm64(session: nox.Session) -> None:
    """The arm64 image, built on an amd64 machine under qemu-user emulation (about 5-7 minutes on 2 cores,
    so CI checks the arm64 image on every run); skipped, saying why, where qemu cannot run arm64 programs."""
    _need_root(session)
    if os.uname().machine == "aarch64":
        session.skip("this machine is arm64: the image session builds the arm64 image")
    handler = pathlib.Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not (handler.exists() and handler.read_text().startswith("enabled")):
        session.skip(f"{handler} is not enabled: scripts/bootstrap.sh registers qemu-user-static for arm64")
    session.run("bash", str(ROOT / "deploy" / "image" / "build.sh"), "--arch", "arm64", external=True)
