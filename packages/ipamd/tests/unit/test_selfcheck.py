"""`aws-k8s-agent --version`: the version line, and a self-check that names what fails to load."""

from __future__ import annotations

import subprocess
import sys

import pytest
from vpccni.cniplugin.version import VERSION
from vpccni.ipamd import selfcheck


def test_the_agent_prints_its_version_and_the_native_code_it_loaded() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vpccni.ipamd.main", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith(f"aws-k8s-agent v{VERSION} (vpccni): Python 3.")
    assert second.startswith("self-check ok: ")
    assert "grpc._cython.cygrpc" in second and "google._upb._message" in second


def test_a_module_that_does_not_load_fails_the_check_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ImportError("wrong ELF class: ELFCLASS32")

    monkeypatch.setattr(selfcheck, "CHECKS", (*selfcheck.CHECKS, ("import broken_wheel", broken)))
    lines: list[str] = []
    assert selfcheck.run(lines.append) == 1
    assert lines[-1].startswith("self-check failed: import broken_wheel:\nTraceback")
    assert lines[-1].endswith("ImportError: wrong ELF class: ELFCLASS32")
