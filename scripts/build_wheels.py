"""Build each package's wheel with poetry and check its METADATA.

Sibling packages must be pinned exactly (lockstep versions) and no path or file reference to a sibling
may leak into a wheel (poetry's path dependencies are for development only).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def check_metadata(wheel: pathlib.Path, version: str) -> list[str]:
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(name).decode()
        if any(n == "vpccni/__init__.py" for n in zf.namelist()):
            problems.append(f"{wheel.name}: ships vpccni/__init__.py (vpccni is a namespace package)")
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        if "file:" in line or "@ " in line or "../" in line:
            problems.append(f"{wheel.name}: path reference leaked: {line}")
        if "vpccni-" in line and f"=={version}" not in line.replace(" ", "").replace("(", ""):
            problems.append(f"{wheel.name}: sibling not pinned to {version}: {line}")
    return problems


def main() -> int:
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "dist")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    problems: list[str] = []
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        meta = tomllib.loads(pyproject.read_text())["project"]
        subprocess.run(
            [sys.executable, "-m", "poetry", "build", "-q", "-f", "wheel", "-o", str(out)],
            cwd=pyproject.parent,
            check=True,
        )
        wheel = next(out.glob(f"{meta['name'].replace('-', '_')}-{meta['version']}-*.whl"))
        problems += check_metadata(wheel, meta["version"])
        print(f"built {wheel.name}")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
