"""Checks on the monorepo itself: layering, the stdlib-only shim, namespace packages, lockstep versions."""

from __future__ import annotations

import ast
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in ROOT.glob("packages/*/pyproject.toml"))


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_cni_plugin_imports_only_the_standard_library() -> None:
    src = ROOT / "packages/cni-plugin/src"
    offenders = []
    for path in src.rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "vpccni":
                if not name.startswith("vpccni.cniplugin"):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
            elif top not in sys.stdlib_module_names and top != "__future__":
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_vpccni_is_a_namespace_package_everywhere() -> None:
    assert [p for p in PACKAGES if (p / "src/vpccni/__init__.py").exists()] == []
    for p in PACKAGES:
        assert list((p / "src/vpccni").glob("*/py.typed")), f"{p.name} has no py.typed"


def test_versions_move_in_lockstep() -> None:
    from vpccni.cniplugin.version import VERSION

    for p in PACKAGES:
        project = tomllib.loads((p / "pyproject.toml").read_text())["project"]
        assert project["version"] == VERSION, p.name
        for dep in project.get("dependencies", []):
            if dep.startswith("vpccni-"):
                assert dep.endswith(f"=={VERSION}"), f"{p.name}: {dep}"


def test_product_code_never_imports_the_testbed() -> None:
    offenders = []
    for p in PACKAGES:
        if p.name == "testbed":
            continue
        for path in (p / "src").rglob("*.py"):
            if any(n.startswith("vpccni.testbed") for n in _imports(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
