"""Fixtures for the shim tests: both forms of the executable (the single-file script for a host's python3,
the standalone build with its own interpreter), and a way to run either like a runtime does."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Callable

import pytest
from vpccni.cniplugin import bundle, standalone
from vpccni.cniplugin.install import RUNTIME_DIR

SYSTEM_PYTHON = "/usr/bin/python3"

RunShim = Callable[..., "ShimResult"]


def imported_modules(stderr: str) -> set[str]:
    """``import time: self | cumulative | [indent]name`` lines -> the names."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


class ShimResult:
    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout.decode()
        self.stderr = proc.stderr.decode()

    def imported(self) -> set[str]:
        """Modules named by ``-X importtime`` on stderr (run with ``python_args=("-X", "importtime")``)."""
        return imported_modules(self.stderr)

    def json(self) -> dict[str, object]:
        value = json.loads(self.stdout)
        assert isinstance(value, dict)
        return value


@pytest.fixture(scope="session")
def shim_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return bundle.build(tmp_path_factory.mktemp("bin") / "aws-cni")


@pytest.fixture(scope="session")
def standalone_build(tmp_path_factory: pytest.TempPathFactory) -> standalone.Build:
    """The standalone aws-cni, packing the system interpreter (the image's, Debian 12's python3.11)."""
    return standalone.build(tmp_path_factory.mktemp("standalone"), python=SYSTEM_PYTHON)


def standalone_argv(build: standalone.Build, python_args: tuple[str, ...] = ()) -> list[str]:
    """The executable as a runtime runs it; with interpreter options, what its trampoline execs plus them."""
    if not python_args:
        return [str(build.executables[0])]
    root = build.out / RUNTIME_DIR / build.runtime
    return [
        str(root / "lib" / "ld.so"), "--inhibit-cache", "--library-path", str(root / "lib"),
        str(root / "bin" / "python3"), "-I", "-S", *python_args, str(root / "aws-cni.pyc"),
    ]  # fmt: skip


@pytest.fixture(params=["script", "standalone"])
def run_shim(request: pytest.FixtureRequest, shim_path: pathlib.Path) -> RunShim:
    """Run aws-cni as the runtime would: the single-file script under the system interpreter in isolated
    mode, or the standalone build's executable."""

    def argv(python_args: tuple[str, ...]) -> list[str]:
        if request.param == "standalone":
            return standalone_argv(request.getfixturevalue("standalone_build"), python_args)
        return [SYSTEM_PYTHON, "-I", "-S", *python_args, str(shim_path)]

    def run(
        env: dict[str, str],
        stdin: object = None,
        *,
        raw: bytes | None = None,
        python_args: tuple[str, ...] = (),
    ) -> ShimResult:
        data = raw if raw is not None else (b"" if stdin is None else json.dumps(stdin).encode())
        proc = subprocess.run(argv(python_args), input=data, env=env, capture_output=True, timeout=30)
        return ShimResult(proc)

    return run


@pytest.fixture(scope="session")
def interpreter_modules() -> tuple[set[str], set[str]]:
    """(What ``python3 -I -S`` loads before any script, the modules built into that interpreter.)"""
    code = "import sys; sys.stdout.write(' '.join(sys.builtin_module_names))"
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-S", "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return imported_modules(proc.stderr), set(proc.stdout.split())
