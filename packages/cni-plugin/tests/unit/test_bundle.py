"""The single-file aws-cni for /opt/cni/bin: its layout, the launcher's finder, the other-interpreter path."""

from __future__ import annotations

import glob
import importlib.util
import json
import marshal
import os
import pathlib
import subprocess
import sys
import traceback
import zipfile

import pytest
from vpccni.cniplugin import bundle, delqueue, launcher, versions
from vpccni.cniplugin.testing import FakeEndpoint

SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter the shebang names


def test_script_layout(shim_path: pathlib.Path) -> None:
    data = shim_path.read_bytes()
    assert data.startswith(b"#!/usr/bin/python3 -IS\n")
    assert shim_path.stat().st_mode & 0o777 == 0o755
    # A zip would make the interpreter start it through runpy (~4 ms of imports before the shim runs).
    assert not zipfile.is_zipfile(shim_path)
    text = data.decode("ascii")
    compile(text, str(shim_path), "exec")  # any python3 can parse it
    # The lines the interpreter compiles on every call stay few; the rest is data in string literals.
    assert len(text.splitlines()) < 20


def test_bundled_modules() -> None:
    names = set(bundle.sources())
    assert {"vpccni", "vpccni.cniplugin", "vpccni.cniplugin.main", "vpccni.cniplugin.wire"} <= names
    assert {"vpccni.cniplugin.launcher", "vpccni.cniplugin.delqueue"} <= names
    assert not {"vpccni.cniplugin.bundle", "vpccni.cniplugin.testing", "vpccni.cniplugin.results"} & names
    packed = launcher.unpack_sources(bundle.pack_sources(bundle.sources()))
    assert {name: (pkg, src.decode()) for name, (pkg, src) in packed.items()} == bundle.sources()


def test_future_imports_become_compiler_flags() -> None:
    source = 'from __future__ import annotations\n"""doc"""\ndef f(x: Undefined) -> None: ...\n'
    code = bundle.compile_module("pkg.mod", False, source)
    assert "__future__" not in code.co_names  # no import at run time
    namespace: dict[str, object] = {}
    exec(code, namespace)  # the annotation is not evaluated, as with the import
    assert namespace["f"].__annotations__ == {"x": "Undefined", "return": "None"}  # type: ignore[attr-defined]
    assert code.co_filename == "aws-cni/pkg/mod.py"


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


@pytest.fixture
def other_interpreter_shim(shim_path: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """The same file as seen by an interpreter whose bytecode magic differs from the builder's."""
    data = shim_path.read_bytes()
    magic = repr(importlib.util.MAGIC_NUMBER).encode()
    assert data.count(magic) == 1
    other = tmp_path / "aws-cni"
    other.write_bytes(data.replace(magic, repr(b"\x00\x00\r\n").encode()))
    other.chmod(0o755)
    return other


def test_another_interpreter_compiles_the_sources(other_interpreter_shim: pathlib.Path) -> None:
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-S", "-X", "importtime", str(other_interpreter_shim)],
        env={"CNI_COMMAND": "VERSION"},
        input=b'{"cniVersion": "0.4.0"}',
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b'{"cniVersion":"0.4.0","supportedVersions":["0.1.0",')
    assert b"zlib" in proc.stderr  # it went through the sources, not the builder's code


def _about(shim: pathlib.Path) -> subprocess.CompletedProcess[bytes]:
    """The shim run with no CNI_COMMAND: it prints its version line to stderr."""
    return subprocess.run([SYSTEM_PYTHON, "-I", "-S", str(shim)], env={}, capture_output=True, timeout=30)


def test_another_interpreter_caches_its_compiled_modules(other_interpreter_shim: pathlib.Path) -> None:
    cache = other_interpreter_shim.with_name(".aws-cni.code")
    assert launcher.cache_path(str(other_interpreter_shim)) == str(cache)
    first = _about(other_interpreter_shim)
    assert first.returncode == 0 and b"AWS CNI v" in first.stderr
    data = cache.read_bytes()
    prefix = data[: data.index(b":", len(b"aws-cni:") + len(importlib.util.MAGIC_NUMBER)) + 1]
    assert prefix.startswith(b"aws-cni:" + importlib.util.MAGIC_NUMBER)
    code = marshal.loads(data[len(prefix) :])
    assert set(code) == set(launcher.unpack_sources(bundle.pack_sources(bundle.sources())))

    # The next call runs what the cache holds: a planted version module shows through.
    planted = compile('VERSION = "planted"', "version.py", "exec")
    code["vpccni.cniplugin.version"] = (False, marshal.dumps(planted))
    cache.write_bytes(prefix + marshal.dumps(code))
    assert b"AWS CNI vplanted" in _about(other_interpreter_shim).stderr

    # A cache for another build of the file (other sources) is ignored and replaced.
    cache.write_bytes(b"aws-cni:" + importlib.util.MAGIC_NUMBER + b"00000000:" + marshal.dumps(code))
    assert b"AWS CNI vplanted" not in _about(other_interpreter_shim).stderr
    assert cache.read_bytes().startswith(prefix)

    # A damaged one too; and no temporary file is left beside the executable.
    cache.write_bytes(prefix + b"\x00garbage")
    again = _about(other_interpreter_shim)
    assert again.returncode == 0 and b"AWS CNI v" in again.stderr
    assert marshal.loads(cache.read_bytes()[len(prefix) :]).keys() == code.keys()
    assert sorted(p.name for p in other_interpreter_shim.parent.iterdir()) == [".aws-cni.code", "aws-cni"]


ADD_RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/32"}], "dns": {}}


def _version_add_queued_del(
    python: str, shim: pathlib.Path, tmp_path: pathlib.Path
) -> list[tuple[int, object]]:
    """(exit status, stdout JSON or None) of VERSION, ADD (ipamd answering) and DEL (ipamd gone: queued)."""
    netns = tmp_path / "netns"
    netns.symlink_to("/proc/self/ns/uts")  # a namespace file that is not the host network namespace
    conf = {
        "cniVersion": "1.0.0", "name": "aws-cni", "cniSocket": str(tmp_path / "cni.sock"),
        "delQueueDir": str(tmp_path / "queue"), "pluginLogFile": str(tmp_path / "plugin.log"),
    }  # fmt: skip
    pod = {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": str(netns)}

    def run(command: str) -> tuple[int, object]:
        proc = subprocess.run(
            [python, "-I", "-S", str(shim)], env={"CNI_COMMAND": command, **pod},
            input=json.dumps(conf).encode(), capture_output=True, timeout=30,
        )  # fmt: skip
        assert not proc.stderr, proc.stderr
        return proc.returncode, json.loads(proc.stdout) if proc.stdout else None

    with FakeEndpoint(conf["cniSocket"], lambda request, fd: ADD_RESULT):
        answers = [run("VERSION"), run("ADD")]
    answers.append(run("DEL"))
    assert len(delqueue.pending(conf["delQueueDir"])) == (1 if answers[2] == (0, None) else 0)
    return answers


def test_another_interpreter_forwards_and_queues(
    other_interpreter_shim: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    version, add, queued_del = _version_add_queued_del(SYSTEM_PYTHON, other_interpreter_shim, tmp_path)
    assert version[0] == 0 and add == (0, ADD_RESULT) and queued_del == (0, None)


def _other_interpreters() -> list[str]:
    """Other CPython versions on this machine (pyenv's), if any: each runs the file as a host would."""
    return sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))


@pytest.mark.parametrize(
    "python", _other_interpreters() or [pytest.param("", marks=pytest.mark.skip("none"))]
)
def test_every_python3_either_runs_it_or_says_it_is_too_old(
    python: str, shim_path: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[1])"], capture_output=True)
    answers = _version_add_queued_del(python, shim_path, tmp_path)
    if (3, int(version.stdout)) >= launcher.MIN_PYTHON:
        supported = {"cniVersion": "1.0.0", "supportedVersions": list(versions.SUPPORTED_VERSIONS)}
        assert answers == [(0, supported), (0, ADD_RESULT), (0, None)]
    else:
        wanted = ".".join(map(str, launcher.MIN_PYTHON))
        for status, body in answers:
            assert status == 1 and isinstance(body, dict) and body["code"] == 999
            assert str(body["msg"]).startswith(f"aws-cni needs python3 >= {wanted} on the host, found 3.")


# --- the launcher's finder, in this process under a name of its own --------------------------------------

PKG = "h16bundled"
MODULES = {
    PKG: (True, ""),
    f"{PKG}.fast": (False, "from __future__ import annotations\nVALUE = 41 + 1\n"),
    f"{PKG}.slow": (False, "def fail() -> None:\n    raise RuntimeError('from the bundle')\n"),
}


@pytest.fixture
def finder() -> launcher.BundleFinder:
    code = {
        name: (pkg, None if name.endswith("slow") else marshal.dumps(bundle.compile_module(name, pkg, src)))
        for name, (pkg, src) in MODULES.items()
    }
    found = launcher.BundleFinder(modules=code, sources=bundle.pack_sources(MODULES))
    sys.meta_path.insert(0, found)
    try:
        yield found
    finally:
        sys.meta_path.remove(found)
        for name in MODULES:
            sys.modules.pop(name, None)


def test_finder_loads_code_and_compiles_source_only_modules(finder: launcher.BundleFinder) -> None:
    from h16bundled import fast, slow  # type: ignore[import-not-found]

    assert fast.VALUE == 42
    assert fast.__spec__.loader is finder and fast.__spec__.origin == "aws-cni/h16bundled/fast.py"
    with pytest.raises(RuntimeError) as info:
        slow.fail()
    # Tracebacks show the bundled source lines (linecache asks the loader).
    text = "".join(traceback.format_exception(info.value))
    assert 'File "aws-cni/h16bundled/slow.py", line 2' in text
    assert "raise RuntimeError('from the bundle')" in text
    assert finder.find_spec("json") is None  # anything else is left to the other finders
