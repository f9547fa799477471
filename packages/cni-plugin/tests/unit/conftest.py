"""Fixtures for the shim tests: the bundled executable, and a way to run it like a runtime does."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Callable

import pytest
from vpccni.cniplugin import bundle

SYSTEM_PYTHON = "/usr/bin/python3"

RunShim = Callable[..., "ShimResult"]


class ShimResult:
    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout.decode()
        self.stderr = proc.stderr.decode()

    def json(self) -> dict[str, object]:
        value = json.loads(self.stdout)
        assert isinstance(value, dict)
        return value


@pytest.fixture(scope="session")
def shim_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return bundle.build(tmp_path_factory.mktemp("bin") / "aws-cni")


@pytest.fixture
def run_shim(shim_path: pathlib.Path) -> RunShim:
    """Run the bundled aws-cni under the system interpreter in isolated mode, as the runtime would."""

    def run(env: dict[str, str], stdin: object = None, *, raw: bytes | None = None) -> ShimResult:
        data = raw if raw is not None else (b"" if stdin is None else json.dumps(stdin).encode())
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-I", "-S", str(shim_path)], input=data, env=env, capture_output=True, timeout=30
        )
        return ShimResult(proc)

    return run
