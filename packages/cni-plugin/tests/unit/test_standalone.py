"""The standalone aws-cni (its own interpreter, loader and libraries): its layout, that it reads nothing of
the host but its CNI inputs, its errors, and upgrades while a runtime executes it. (Its CNI behaviour is
test_shim.py's, which runs every case against both forms of the executable.)"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import threading

import pytest
from vpccni.cniplugin import bundle, delqueue, install, standalone
from vpccni.cniplugin.install import RUNTIME_DIR
from vpccni.cniplugin.testing import FakeEndpoint, HangUp
from vpccni.cniplugin.version import VERSION
from vpccni.testbed.bareroot import program_interpreter

from .conftest import SYSTEM_PYTHON

ADD_RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/32"}], "dns": {}}


def _root(build: standalone.Build) -> pathlib.Path:
    return build.out / RUNTIME_DIR / build.runtime


@pytest.fixture
def node(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    """A pretend node's CNI inputs: socket, pod netns (a namespace file that is not the host network
    namespace, as test_shim.py's), DEL queue, plugin log."""
    (tmp_path / "netns").symlink_to("/proc/self/ns/uts")
    return {
        "sock": tmp_path / "cni.sock", "netns": tmp_path / "netns",
        "queue": tmp_path / "queue", "log": tmp_path / "log" / "plugin.log",
    }  # fmt: skip


def _conf(node: dict[str, pathlib.Path]) -> bytes:
    conf = {
        "cniVersion": "1.0.0", "name": "aws-cni", "type": "aws-cni", "cniSocket": str(node["sock"]),
        "delQueueDir": str(node["queue"]), "pluginLogFile": str(node["log"]),
    }  # fmt: skip
    return json.dumps(conf).encode()


def _env(node: dict[str, pathlib.Path], command: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": "eth0",
        "CNI_NETNS": str(node["netns"]), "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
    }  # fmt: skip


def _run(
    executable: pathlib.Path, env: dict[str, str], stdin: bytes = b"{}"
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(executable)], env=env, input=stdin, capture_output=True, timeout=30)


def test_layout(standalone_build: standalone.Build) -> None:
    link = standalone_build.out / "aws-cni"
    assert os.readlink(link) == f"{RUNTIME_DIR}/{standalone_build.runtime}/aws-cni"  # relative: any mount
    assert re.fullmatch(rf"{re.escape(VERSION)}-[0-9a-f]{{12}}", standalone_build.runtime)
    root = _root(standalone_build)
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert {
        "aws-cni",
        "aws-cni.pyc",
        "bin/python3",
        "bin/python3._pth",
        "lib/ld.so",
        "lib/libc.so.6",
    } <= files
    assert "lib/python3.11/json/__init__.pyc" in files and "lib/python3.11/encodings/utf_8.pyc" in files
    assert not [f for f in files if f.endswith(".py")], "sources would be compiled and cached in place"
    # The trampoline is static: the host needs no loader to start it.
    assert program_interpreter(root / "aws-cni") is None
    assert program_interpreter(root / "bin" / "python3") is not None
    assert (root / "bin" / "python3._pth").read_text() == "../lib/python3.11\n../lib/python3.11/lib-dynload\n"


def test_its_encodings_reads_the_aliases_table_at_the_first_lookup_that_needs_it(
    standalone_build: standalone.Build,
) -> None:
    root = _root(standalone_build)
    probe = (
        "import codecs, json, sys\n"
        "start = sorted(m for m in sys.modules if m.startswith('encodings'))\n"
        "names = [codecs.lookup(n).name for n in ('utf-8', 'UTF8', 'latin1', 'ascii', 'u8')]\n"
        "print(json.dumps([start, names]))\n"
    )
    argv = [
        str(root / "lib" / "ld.so"), "--inhibit-cache", "--library-path", str(root / "lib"),
        str(root / "bin" / "python3"), "-I", "-S", "-c", probe,
    ]  # fmt: skip
    done = subprocess.run(argv, env={"LC_ALL": "C"}, capture_output=True, text=True, check=True, timeout=30)
    start, names = json.loads(done.stdout)
    assert start == ["encodings", "encodings.utf_8"], "started without the aliases table"
    assert names == ["utf-8", "utf-8", "iso8859-1", "ascii", "utf-8"], "every name resolves as before"


def test_lazy_aliases_leaves_a_source_it_was_not_written_for_alone() -> None:
    init = (pathlib.Path(os.__file__).parent / "encodings" / "__init__.py").read_text()
    table = "aliases = {'utf8': 'utf_8', 'latin1': 'latin_1'}\n"
    patched = standalone.lazy_aliases(init, table)
    assert patched is not None and "from . import aliases\n" not in patched
    compile(patched, "encodings/__init__.py", "exec")
    assert standalone.lazy_aliases(init, "aliases = {'utf_8': 'utf_8'}\n") is None, "utf_8 an alias"
    assert standalone.lazy_aliases(init.replace("_aliases.get(", "_aliases.lookup("), table) is None


def test_a_second_build_of_the_same_code_is_the_same_directory(
    standalone_build: standalone.Build, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "bin"
    shutil.copytree(standalone_build.out, out, symlinks=True)
    again = standalone.build(out, python=SYSTEM_PYTHON)
    assert again.runtime == standalone_build.runtime
    assert [p.name for p in (out / RUNTIME_DIR).iterdir()] == [standalone_build.runtime]


def test_more_executables_share_one_build(tmp_path: pathlib.Path) -> None:
    """How egress-cni will join: an entry in EXECUTABLES (here aws-cni's module under a second name)."""
    executables = {"aws-cni": bundle.MAIN, "egress-cni": bundle.MAIN}
    build = standalone.build(tmp_path / "bin", python=SYSTEM_PYTHON, executables=executables)
    assert [p.name for p in build.executables] == ["aws-cni", "egress-cni"]
    root = _root(build)
    assert {"aws-cni", "aws-cni.pyc", "egress-cni", "egress-cni.pyc"} <= {p.name for p in root.iterdir()}
    for executable in build.executables:
        assert os.readlink(executable) == f"{RUNTIME_DIR}/{build.runtime}/{executable.name}"
        proc = _run(executable, {"CNI_COMMAND": "VERSION"})
        assert proc.returncode == 0 and b'"supportedVersions"' in proc.stdout
    host = tmp_path / "host-bin"
    assert [p.name for p in install.install(build.out, host)] == ["aws-cni", "egress-cni"]


def test_the_shims_imports_are_found_and_type_checking_ones_left_out() -> None:
    sources = {
        "m": (
            False,
            "import json\nif TYPE_CHECKING:\n    import typing\ndef f():\n    from os import path\n",
        ),
        "n": (False, "from vpccni.cniplugin import wire\nfrom __future__ import annotations\n"),
    }
    assert standalone.stdlib_imports(sources) == {"json", "os", "__future__"}


def _paths(trace: str) -> set[str]:
    """Every absolute path a traced call named (arguments and results alike)."""
    return {m for line in trace.splitlines() for m in re.findall(r'"(/[^"]*)"', line)}


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/bootstrap.sh installs it)")
def test_it_reads_nothing_of_the_host_but_its_cni_inputs(
    standalone_build: standalone.Build, node: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    trace = tmp_path / "trace"
    # Everything a host's locale and time zone settings would make glibc and Python read.
    hostile = {"LANG": "de_DE.UTF-8", "LC_ALL": "fr_FR.UTF-8", "TZ": "Europe/Berlin", "PYTHONHOME": "/usr"}

    def traced(command: str) -> subprocess.CompletedProcess[bytes]:
        argv = [
            "strace",
            "-f",
            "-qq",
            "-s",
            "4096",
            "-o",
            str(trace),
            "-e",
            "trace=%file,%desc,connect",
            "--",
        ]
        env = {**_env(node, command), **hostile}
        return subprocess.run(
            [*argv, str(standalone_build.out / "aws-cni")], env=env, input=_conf(node),
            capture_output=True, timeout=60,
        )  # fmt: skip

    seen: set[str] = set()
    with FakeEndpoint(str(node["sock"]), lambda request, fd: ADD_RESULT):
        for command in ("VERSION", "ADD"):
            assert traced(command).returncode == 0
            seen |= _paths(trace.read_text())
    queued = traced("DEL")  # ipamd gone: the DEL queue's slow path imports standard-library modules
    assert queued.returncode == 0 and len(delqueue.pending(node["queue"])) == 1
    seen |= _paths(trace.read_text())
    assert any(p.startswith(f"{_root(standalone_build)}/lib/python3.11/json") for p in seen), (
        "traced nothing?"
    )

    allowed_dirs = (f"{_root(standalone_build)}/", f"{node['sock'].parent}/")
    allowed = {
        str(standalone_build.out / "aws-cni"),  # what the runtime executes
        str(node["sock"].parent),  # looked at before creating the log and queue directories in it
        "/proc/self/exe",  # the trampoline finding its directory
        "/proc/self/ns/net",  # the shim refusing its own netns as the pod's
        "/etc/ld.so.preload",  # glibc's loader checks it, always (the host's emergency hook)
    }
    outside = sorted(p for p in seen if p not in allowed and not p.startswith(allowed_dirs))
    assert not outside, outside


def test_a_missing_file_is_a_cni_error_that_says_what_to_do(
    standalone_build: standalone.Build, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "bin"
    shutil.copytree(standalone_build.out, out, symlinks=True)
    python = out / RUNTIME_DIR / standalone_build.runtime / "bin" / "python3"
    python.unlink()
    proc = _run(out / "aws-cni", {"CNI_COMMAND": "VERSION"})
    assert proc.returncode == 1 and not proc.stderr
    body = json.loads(proc.stdout)
    assert body["code"] == 999
    assert body["msg"] == (
        f"vpccni CNI executable: its interpreter is missing: {python}: No such file or directory; "
        "restart the aws-node pod to install it again"
    )


def test_a_build_for_another_python_version_is_refused() -> None:
    other = pathlib.Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3"
    if not other.exists():
        pytest.skip(f"{other} is not installed")
    with pytest.raises(standalone.BuildError, match="same Python version"):
        standalone.probe(str(other), ["json"])


def test_a_compiler_that_cannot_build_it_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(standalone.BuildError, match="musl-tools"):
        standalone.compile_trampoline(tmp_path / "t", cc="false")


# --- upgrades while a runtime executes it ----------------------------------------------------------------


@pytest.fixture
def releases(standalone_build: standalone.Build, tmp_path: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    """An image-like directory holding four builds (the real one under four names: every install of the
    next one copies a whole tree); point its `aws-cni` at one with `install.activate`."""
    directory = tmp_path / "app"
    names = [f"9.9.{i}-{i:012x}" for i in range(4)]
    for name in names:
        shutil.copytree(_root(standalone_build), directory / RUNTIME_DIR / name, symlinks=True)
    return directory, names


def _upgrade(
    app: pathlib.Path, host: pathlib.Path, name: str, *, grace_s: float = install.RETIRE_GRACE_S
) -> None:
    install.activate(app, {"aws-cni": name})
    install.install(app, host, grace_s=grace_s)


def _call_in_flight(
    host: pathlib.Path, node: dict[str, pathlib.Path], during: object
) -> subprocess.CompletedProcess[bytes]:
    """A DEL that is inside ipamd while `during()` runs; then ipamd dies without answering, so the shim
    takes its slow path (queue the DEL), which imports standard-library modules from its own build."""
    entered, release = threading.Event(), threading.Event()

    def handler(request: object, fd: int | None) -> object:
        entered.set()
        release.wait(30)
        raise HangUp()

    stdin = node["sock"].with_name("stdin.json")
    stdin.write_bytes(_conf(node))
    with FakeEndpoint(str(node["sock"]), handler), open(stdin, "rb") as conf:
        proc = subprocess.Popen(
            [str(host / "aws-cni")], env=_env(node, "DEL"),
            stdin=conf, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert entered.wait(30), "the call never reached the endpoint"
        try:
            during()  # type: ignore[operator]
        finally:
            release.set()
        stdout, stderr = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("grace_s", [install.RETIRE_GRACE_S, 0], ids=["kept-for-the-grace-period", "deleted"])
def test_a_call_running_through_upgrades_completes_on_its_own_build(
    releases: tuple[pathlib.Path, list[str]], node: dict[str, pathlib.Path], tmp_path: pathlib.Path,
    grace_s: float,
) -> None:  # fmt: skip
    """Two upgrades while a call runs. Deleting the retired build at once (grace 0) shows why builds are
    kept after they stop being linked: that call then fails on its next import."""
    app, names = releases
    host = tmp_path / "host-bin"
    _upgrade(app, host, names[0])

    def two_upgrades() -> None:
        _upgrade(app, host, names[1], grace_s=grace_s)
        _upgrade(app, host, names[2], grace_s=grace_s)

    done = _call_in_flight(host, node, two_upgrades)
    assert install.runtime_of(host, "aws-cni") == names[2]
    if not grace_s:
        assert not (done.returncode == 0 and delqueue.pending(node["queue"]))
        assert b"ModuleNotFoundError" in done.stdout + done.stderr  # its build's modules were gone
        return
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert len(delqueue.pending(node["queue"])) == 1
    # Both retired builds wait out their grace period; then a clean-up keeps only the linked one.
    assert sorted(p.name for p in (host / RUNTIME_DIR).iterdir()) == names[:3]
    install.collect(host, grace_s=0)
    assert [p.name for p in (host / RUNTIME_DIR).iterdir()] == [names[2]]


def test_calls_starting_during_upgrades_all_succeed(
    releases: tuple[pathlib.Path, list[str]], tmp_path: pathlib.Path
) -> None:
    app, names = releases
    host = tmp_path / "host-bin"
    _upgrade(app, host, names[0])
    stop = threading.Event()
    answers: list[tuple[int, bytes]] = []

    def call_repeatedly() -> None:
        while not stop.is_set():
            proc = _run(host / "aws-cni", {"CNI_COMMAND": "VERSION"})
            answers.append((proc.returncode, proc.stdout))

    callers = [threading.Thread(target=call_repeatedly) for _ in range(3)]
    for caller in callers:
        caller.start()
    try:
        for name in names[1:]:
            _upgrade(app, host, name)  # copies the tree, then swaps the link, while the calls run
    finally:
        stop.set()
        for caller in callers:
            caller.join(60)
    assert install.runtime_of(host, "aws-cni") == names[-1]
    assert len(answers) >= 3
    failed = [(code, out) for code, out in answers if code != 0 or b'"supportedVersions"' not in out]
    assert not failed, failed[:3]
