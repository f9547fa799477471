"""The init container against a read-only host CNI bin dir: a real read-only mount (a tmpfs mounted `ro` in
a mount namespace of the test's own), and the message an operator reads in the init container's log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from vpccni.cniplugin.testing import fake_standalone

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_a_read_only_cni_bin_dir_is_reported_as_such(tmp_path: Path) -> None:
    app, plugins, host_bin = tmp_path / "app", tmp_path / "plugins", tmp_path / "host-bin"
    fake_standalone(app)
    plugins.mkdir()
    (plugins / "loopback").write_text("#!/bin/sh\n")
    host_bin.mkdir()
    init = [
        sys.executable,
        "-m",
        "vpccni.ipamd.install.init",
        "--plugins-dir",
        str(plugins),
        "--app-dir",
        str(app),
    ]
    script = 'mount -t tmpfs -o ro vpccni-ro "$1" && shift && exec "$@"'
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    proc = subprocess.run(
        [*unshare, "sh", "-c", script, "sh", str(host_bin), *init],
        env={**os.environ, "HOST_CNI_BIN_PATH": str(host_bin)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    log = proc.stdout + proc.stderr
    assert f"init failed: cannot install CNI plugins into {host_bin}: it is on a read-only file system" in log
    assert "needs it mounted read-write (the manifest's hostPath volume cni-bin-dir)" in log
    assert "Traceback" not in log
    assert list(host_bin.iterdir()) == []  # the mount is gone with the namespace; nothing was written
