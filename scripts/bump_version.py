"""Move every vpccni distribution to one new version (lockstep): ``python scripts/bump_version.py 0.2.0``.

Rewrites each package's ``version``, the exact pins between siblings and ``VERSION``, the one file the
code reads its version from (the aws-cni shim and ipamd compare versions on every request).
"""

from __future__ import annotations

import pathlib
import re
import sys

from vpccni.testbed.k8stools import helm_template

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION_RE = r"\d+\.\d+\.\d+(?:[.-]?[a-z0-9.]+)?"


def bump(new: str) -> list[pathlib.Path]:
    if not re.fullmatch(VERSION_RE, new):
        raise SystemExit(f"not a version: {new!r} (expected e.g. 1.2.3 or 1.2.3rc1)")
    changed = []
    for pyproject in ROOT.glob("packages/*/pyproject.toml"):
        text = pyproject.read_text()
        text = re.sub(rf'(?m)^version = "{VERSION_RE}"', f'version = "{new}"', text, count=1)
        text = re.sub(rf'"(vpccni-[a-z-]+)=={VERSION_RE}"', rf'"\1=={new}"', text)
        pyproject.write_text(text)
        changed.append(pyproject)
    version_file = ROOT / "packages/cni-plugin/src/vpccni/cniplugin/version.py"
    text = re.sub(rf'VERSION = "{VERSION_RE}"', f'VERSION = "{new}"', version_file.read_text())
    version_file.write_text(text)
    changed.append(version_file)
    # Each chart, and its plain manifest (the chart rendered with default values, by the real helm).
    for name, manifest in (
        ("aws-vpc-cni", "aws-k8s-cni.yaml"),
        ("cni-metrics-helper", "cni-metrics-helper.yaml"),
    ):
        chart = ROOT / "deploy/charts" / name / "Chart.yaml"
        text = re.sub(rf"(?m)^version: {VERSION_RE}$", f"version: {new}", chart.read_text())
        text = re.sub(rf'(?m)^appVersion: "?{VERSION_RE}"?$', f'appVersion: "{new}"', text)
        chart.write_text(text)
        (ROOT / "deploy" / manifest).write_text(helm_template(chart.parent, release=name))
        changed += [chart, ROOT / "deploy" / manifest]
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/bump_version.py NEW_VERSION")
    for path in bump(sys.argv[1]):
        print(f"updated {path.relative_to(ROOT)}")
