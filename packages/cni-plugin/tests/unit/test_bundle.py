"""The single-file aws-cni for /opt/cni/bin."""

from __future__ import annotations

import pathlib
import subprocess
import zipfile

from vpccni.cniplugin import bundle


def test_archive_layout(shim_path: pathlib.Path) -> None:
    assert shim_path.read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
    assert shim_path.stat().st_mode & 0o777 == 0o755
    with zipfile.ZipFile(shim_path) as zf:
        names = set(zf.namelist())
    assert "__main__.py" in names
    assert "vpccni/__init__.py" not in names, "vpccni must stay a namespace package"
    assert {"vpccni/", "vpccni/cniplugin/"} <= names
    assert {"vpccni/cniplugin/main.py", "vpccni/cniplugin/main.pyc", "vpccni/cniplugin/wire.pyc"} <= names
    assert not any(n.endswith(("testing.py", "bundle.py")) for n in names)


def test_runs_directly_through_its_shebang(shim_path: pathlib.Path) -> None:
    proc = subprocess.run(
        [str(shim_path)],
        env={"CNI_COMMAND": "VERSION"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith(b'{"cniVersion":"1.1.0","supportedVersions":["0.1.0",')


def test_build_is_reproducible(tmp_path: pathlib.Path) -> None:
    a = bundle.build(tmp_path / "a")
    b = bundle.build(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()


def test_cli_usage(tmp_path: pathlib.Path) -> None:
    assert bundle.main([]) == 2
    assert bundle.main([str(tmp_path / "out" / "aws-cni")]) == 0
    assert (tmp_path / "out" / "aws-cni").exists()
