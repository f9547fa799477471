"""Installing standalone builds into a CNI bin dir: layout, upgrades, clean-up, damaged and foreign files.
(Upgrades under running calls, with the real build: test_standalone.py.)"""

from __future__ import annotations

import os
import pathlib
import time

import pytest
from vpccni.cniplugin import install
from vpccni.cniplugin.install import RUNTIME_DIR, InstallError
from vpccni.cniplugin.testing import fake_standalone

OLD, NEW = "0.1.0-00000000000a", "0.2.0-00000000000b"


def _release(tmp_path: pathlib.Path, runtime: str, *names: str) -> pathlib.Path:
    app = tmp_path / f"app-{runtime}"
    fake_standalone(app, runtime=runtime, executables=names or ("aws-cni",))
    return app


def _entries(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_install_copies_the_build_and_links_each_executable(tmp_path: pathlib.Path) -> None:
    host = tmp_path / "bin"
    paths = install.install(_release(tmp_path, OLD, "aws-cni", "egress-cni"), host)
    assert paths == [host / "aws-cni", host / "egress-cni"]
    assert _entries(host) == [RUNTIME_DIR, "aws-cni", "egress-cni"]
    assert os.readlink(host / "egress-cni") == f"{RUNTIME_DIR}/{OLD}/egress-cni"
    assert (host / "aws-cni").read_text() == f"#!/bin/sh\necho aws-cni {OLD}\n"
    assert os.access(host / "aws-cni", os.X_OK)
    assert _entries(host / RUNTIME_DIR) == [OLD]  # no temporary copy left behind


def test_only_the_named_executables_are_installed(tmp_path: pathlib.Path) -> None:
    host = tmp_path / "bin"
    install.install(_release(tmp_path, OLD, "aws-cni", "egress-cni"), host, ["aws-cni"])
    assert _entries(host) == [RUNTIME_DIR, "aws-cni"]


def test_installing_the_same_build_again_copies_nothing(tmp_path: pathlib.Path) -> None:
    app, host = _release(tmp_path, OLD), tmp_path / "bin"
    install.install(app, host)
    inode = (host / RUNTIME_DIR / OLD / "lib" / "libc.so.6").stat().st_ino
    install.install(app, host)
    assert (host / RUNTIME_DIR / OLD / "lib" / "libc.so.6").stat().st_ino == inode


def test_an_upgrade_retires_the_old_build_and_a_later_one_deletes_it(tmp_path: pathlib.Path) -> None:
    host = tmp_path / "bin"
    install.install(_release(tmp_path, OLD), host)
    os.utime(host / RUNTIME_DIR / OLD, (0, 0))  # linked since long ago: no grace period started yet
    install.install(_release(tmp_path, NEW), host)
    assert install.runtime_of(host, "aws-cni") == NEW
    assert _entries(host / RUNTIME_DIR) == [OLD, NEW], "a call may still run on the old build"
    assert time.time() - (host / RUNTIME_DIR / OLD).stat().st_mtime < 60, "its grace period starts now"
    assert install.collect(host) == []
    assert install.collect(host, now=time.time() + install.RETIRE_GRACE_S) == [host / RUNTIME_DIR / OLD]
    assert _entries(host / RUNTIME_DIR) == [NEW]


def test_a_build_still_linked_by_another_executable_is_kept(tmp_path: pathlib.Path) -> None:
    host = tmp_path / "bin"
    install.install(_release(tmp_path, OLD, "aws-cni", "egress-cni"), host)
    install.install(_release(tmp_path, NEW), host, grace_s=0)
    assert install.runtime_of(host, "egress-cni") == OLD
    assert _entries(host / RUNTIME_DIR) == [OLD, NEW]


def test_a_damaged_build_of_the_same_name_is_replaced(tmp_path: pathlib.Path) -> None:
    app, host = _release(tmp_path, OLD), tmp_path / "bin"
    install.install(app, host)
    (host / RUNTIME_DIR / OLD / "lib" / "libc.so.6").write_bytes(b"truncated")
    install.install(app, host, grace_s=0)
    assert (host / RUNTIME_DIR / OLD / "lib" / "libc.so.6").read_bytes().startswith(b"\x7fELF stand-in")
    assert _entries(host / RUNTIME_DIR) == [OLD], "the damaged copy is deleted once out of grace"


def test_what_earlier_versions_left_is_replaced_or_removed(tmp_path: pathlib.Path) -> None:
    """The single-file script as a regular file, its compiled-modules cache, an interrupted copy."""
    host = tmp_path / "bin"
    (host / RUNTIME_DIR / ".tmp-crashed").mkdir(parents=True)
    os.utime(host / RUNTIME_DIR / ".tmp-crashed", (0, 0))
    (host / "aws-cni").write_text("#!/usr/bin/python3 -IS\n")
    (host / ".aws-cni.code").write_bytes(b"aws-cni:cache")
    (host / "portmap").write_text("a reference plugin")
    install.install(_release(tmp_path, NEW), host)
    assert _entries(host) == [RUNTIME_DIR, "aws-cni", "portmap"]
    assert _entries(host / RUNTIME_DIR) == [NEW]


def test_a_source_without_a_standalone_build_is_refused(tmp_path: pathlib.Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "aws-cni").write_text("#!/usr/bin/python3 -IS\n")
    with pytest.raises(InstallError, match=r"no standalone executable .* rebuild it"):
        install.install(app, tmp_path / "bin")
    with pytest.raises(InstallError, match=r"app/aws-cni is not a standalone executable"):
        install.install(app, tmp_path / "bin", ["aws-cni"])
