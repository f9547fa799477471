"""egress-cni's ADD answered by its trampoline without the interpreter (egressfast.c), held to the shim's
answers.

Two copies of one standalone build: the complete one, and one without its interpreter, where any call the
fast path does not answer ends in the trampoline's "its interpreter is missing". Whatever the fast path
answers, the shim (run directly on the complete build's interpreter) must answer with the same status, the
same stdout bytes and the same log line (its time stamp aside); whatever it leaves to the shim must reach the
shim with stdin intact.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from vpccni.cniplugin import standalone
from vpccni.cniplugin.install import RUNTIME_DIR

MISSING = "its interpreter is missing"
NETNS = "/var/run/netns/cni-0b1c"
LOG = "@LOG@"  # replaced by the test's log file in the stdin text
PRIVATE = "@DIR@"  # replaced by the test's own folder: no call reaches the node's ipamd or DEL queue
VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


@dataclass(frozen=True)
class Answer:
    status: int
    stdout: bytes
    stderr: list[object]
    log: list[object]


@dataclass(frozen=True)
class Runtime:
    complete: pathlib.Path  # the build's directory
    bare: pathlib.Path  # a copy without bin/python3
    logdir: pathlib.Path
    private: pathlib.Path  # the socket path (nothing listens) and DEL queue of the calls the shim answers

    @property
    def log(self) -> pathlib.Path:
        return self.logdir / "egress.log"


@pytest.fixture(scope="module")
def runtime(
    standalone_build: standalone.Build, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    complete = standalone_build.out / RUNTIME_DIR / standalone_build.runtime
    assert (complete / "egress-cni").exists()
    bare = tmp_path_factory.mktemp("bare") / "runtime"
    shutil.copytree(complete, bare, symlinks=True)
    (bare / "bin" / "python3").unlink()
    logdir = tmp_path_factory.mktemp("logs")
    yield Runtime(complete=complete, bare=bare, logdir=logdir, private=tmp_path_factory.mktemp("node"))


def _lines(text: str) -> list[object]:
    """Log lines without their time stamps (the two runs happen at different times), and a queued DEL's
    entry by its folder (the file is named after the time too)."""
    out: list[object] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if isinstance(record, dict):
            record.pop("ts", None)
            if isinstance(record.get("entry"), str):
                record["entry"] = os.path.dirname(record["entry"])
        out.append(record)
    return out


def _run(rt: Runtime, argv: list[str], env: dict[str, str], data: bytes) -> Answer:
    shutil.rmtree(rt.logdir, ignore_errors=True)
    rt.logdir.mkdir()
    proc = subprocess.run(argv, input=data, env=env, capture_output=True, timeout=60, check=False)
    log = rt.log.read_text() if rt.log.exists() else ""
    return Answer(proc.returncode, proc.stdout, _lines(proc.stderr.decode(errors="replace")), _lines(log))


def _stdin(rt: Runtime, conf: dict[str, object] | bytes) -> bytes:
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    return data.replace(LOG.encode(), str(rt.log).encode()).replace(
        PRIVATE.encode(), str(rt.private).encode()
    )


def fast(rt: Runtime, env: dict[str, str], conf: dict[str, object] | bytes) -> Answer | None:
    """The fast path's answer; None when it left the call to the shim."""
    answer = _run(rt, [str(rt.bare / "egress-cni")], env, _stdin(rt, conf))
    if MISSING in answer.stdout.decode(errors="replace"):
        return None
    return answer


def trampoline(rt: Runtime, env: dict[str, str], conf: dict[str, object] | bytes) -> Answer:
    """The complete build's egress-cni, as a runtime runs it."""
    return _run(rt, [str(rt.complete / "egress-cni")], env, _stdin(rt, conf))


def shim(rt: Runtime, env: dict[str, str], conf: dict[str, object] | bytes) -> Answer:
    """The Python shim alone, on the build's interpreter with the environment the trampoline gives it."""
    root = rt.complete
    argv = [
        str(root / "lib" / "ld.so"), "--inhibit-cache", "--library-path", str(root / "lib"),
        str(root / "bin" / "python3"), "-I", "-S", str(root / "egress-cni.pyc"),
    ]  # fmt: skip
    pinned = {"LC_ALL": "C", "TZ": "UTC0", "TZDIR": str(root / "zoneinfo")}
    return _run(rt, argv, {**env, **pinned}, _stdin(rt, conf))


def _env(**extra: str | None) -> dict[str, str]:
    env: dict[str, str | None] = {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "5f1c0ffee", "CNI_IFNAME": "eth0", "CNI_NETNS": NETNS,
        "CNI_PATH": "/opt/cni/bin", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
        "K8S_POD_INFRA_CONTAINER_ID=5f1c0ffee;K8S_POD_UID=8d7e",
    }  # fmt: skip
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _entry(version: str = "0.4.0", family: int = 4, **extra: object) -> dict[str, object]:
    """egress-cni's stdin as a runtime builds it from ipamd's conflist entry (IPv4 egress for IPv6 pods,
    or IPv6 egress for IPv4 pods) and aws-cni's result listing the egress interfaces."""
    pod_if, node_ip, subnet, dst = (
        ("v4if0", "10.0.0.5", "169.254.172.0/22", "0.0.0.0/0")
        if family == 4
        else ("v6if0", "2001:db8::5", "fd00::ac:00/118", "::/0")
    )
    ip: dict[str, object] = {"address": "2001:db8:1::7/128" if family == 4 else "10.0.1.7/32", "interface": 1}
    if version < "1.0.0":
        ip["version"] = "6" if family == 4 else "4"
    prev = {
        "cniVersion": version,
        "interfaces": [
            {"name": "eni5f1c0ffee01"}, {"name": "eth0", "sandbox": NETNS, "mac": "02:11:22:33:44:55"},
            {"name": "egr5f1c0ffee01", "mac": "02:11:22:33:44:56"},
            {"name": pod_if, "mac": "02:11:22:33:44:57", "sandbox": NETNS},
        ],
        "ips": [ip],
        "routes": [{"dst": "::/0" if family == 4 else "0.0.0.0/0"}],
        "dns": {},
    }  # fmt: skip
    conf = {
        "cniVersion": version, "name": "aws-cni", "type": "egress-cni", "mtu": "9001", "enabled": "true",
        "randomizeSNAT": "prng", "nodeIP": node_ip,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": dst}],
                 "dataDir": "/run/cni/v6pd/egress-v4-ipam"},
        "pluginLogFile": LOG, "pluginLogLevel": "DEBUG", "prevResult": prev,
        "cniSocket": f"{PRIVATE}/cni.sock", "delQueueDir": f"{PRIVATE}/del-queue",
    }  # fmt: skip
    conf.update(extra)
    return conf


def _same(rt: Runtime, env: dict[str, str], conf: dict[str, object] | bytes, answer: Answer) -> None:
    expected = shim(rt, env, conf)
    assert answer == expected


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("version", VERSIONS)
def test_the_entries_ipamd_writes_are_answered_without_the_interpreter(
    runtime: Runtime, version: str, family: int
) -> None:
    conf = _entry(version, family)
    answer = fast(runtime, _env(), conf)
    assert answer is not None, "the common case must not start the interpreter"
    assert answer.status == 0 and json.loads(answer.stdout) == conf["prevResult"]
    assert [r["msg"] for r in answer.log] == ["done: egress wired with aws-cni's ADD"]  # type: ignore[index]
    _same(runtime, _env(), conf, answer)


@pytest.mark.parametrize(
    ("env", "conf"),
    [
        ({}, {**_entry(), "pluginLogLevel": "error"}),  # no line at all
        ({}, {**_entry(), "pluginLogFile": ""}),  # the line on stderr
        ({}, {**_entry(), "pluginLogFile": "stderr", "pluginLogLevel": "Info"}),
        ({}, {**_entry(), "pluginLogFile": "STDERR"}),
        ({"CNI_ARGS": None, "CNI_PATH": None}, _entry()),
        ({}, {**_entry(), "enabled": True, "mtu": 1500, "nodeIP": None, "ipam": {}}),
        ({}, {**_entry(family=6), "nodeIP": "", "cniVersion": "1.1"}),  # the subnet names the family
        ({}, {**_entry(), "runtimeConfig": {"portMappings": [], "io.kubernetes.cri.pod-annotations": {}}}),
    ],
)
def test_variants_the_fast_path_answers_as_the_shim_does(
    runtime: Runtime, env: dict[str, str | None], conf: dict[str, object]
) -> None:
    if conf.get("cniVersion") == "1.1":
        conf["prevResult"] = {**conf["prevResult"], "cniVersion": "1.1.0"}  # type: ignore[dict-item]
    answer = fast(runtime, _env(**env), conf)
    assert answer is not None
    _same(runtime, _env(**env), conf, answer)


def _big_stdin() -> bytes:
    conf = _entry()
    conf["padding"] = "x" * (1 << 20)
    return json.dumps(conf).encode()


@pytest.mark.parametrize(
    ("env", "conf"),
    [
        ({}, b'{"cniVersion": "0.4.0", "type": "egress-cni", '),  # not JSON: the shim's code 6
        ({}, b""),
        ({}, _big_stdin()),  # over 1 MiB: the shim's code 7 (the fast path read one byte more)
        ({}, {**_entry(), "enabled": "false"}),  # ipamd must undo the wiring: unreachable here
        ({}, {**_entry(), "prevResult": {"cniVersion": "0.4.0", "interfaces": []}}),  # ipamd must wire it
        ({}, {**_entry(), "prevResult": {**_entry()["prevResult"], "cniVersion": "1.0.0"}}),  # type: ignore[dict-item]
        ({}, {**_entry(), "mtu": "jumbo"}),  # code 7
        ({}, {**_entry(), "nodeIP": 10}),
        ({}, {**_entry(), "name": "aws cni"}),
        ({}, {**_entry(), "runtimeConfig": {"ips": ["10.0.0.9/32"]}}),  # code 2
        ({}, {**_entry(), "prevResult": {**_entry()["prevResult"], "note": "caf\u00e9"}}),  # type: ignore[dict-item]
        ({}, {**_entry(), "mtu": 9001.0}),
        # DEL (0x7f) as is in the input: Python writes it back as \u007f
        (
            {},
            json.dumps(
                {**_entry(), "prevResult": {**_entry()["prevResult"], "n": "\x7f"}}, ensure_ascii=False
            ).encode(),
        ),  # type: ignore[dict-item]
        ({"CNI_IFNAME": "eth 0"}, _entry()),  # code 4
        ({"CNI_NETNS": "netns"}, _entry()),
        ({"CNI_CONTAINERID": None}, _entry()),
        ({"CNI_ARGS": "K8S_POD_NAME=web;FOO=1"}, _entry()),
        ({"CNI_COMMAND": "DEL"}, _entry()),  # every other command goes to the shim
        ({"CNI_COMMAND": "CHECK"}, _entry()),
        ({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}'),
    ],
)
def test_what_it_leaves_to_the_shim_reaches_the_shim_intact(
    runtime: Runtime, env: dict[str, str | None], conf: dict[str, object] | bytes
) -> None:
    assert fast(runtime, _env(**env), conf) is None
    _same(runtime, _env(**env), conf, trampoline(runtime, _env(**env), conf))


def test_a_log_folder_to_create_or_a_log_to_rotate_is_left_to_the_shim(runtime: Runtime) -> None:
    missing = {**_entry(), "pluginLogFile": f"{LOG}.d/sub/egress.log"}
    assert fast(runtime, _env(), missing) is None
    answer = trampoline(runtime, _env(), missing)
    assert answer.status == 0
    assert pathlib.Path(f"{runtime.log}.d/sub/egress.log").read_text().count("done: egress wired") == 1

    runtime.logdir.mkdir(exist_ok=True)
    full = {**_entry(), "pluginLogFile": str(runtime.logdir.parent / "full.log")}
    with open(runtime.logdir.parent / "full.log", "wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: the size the shim rotates at
    assert fast(runtime, _env(), full) is None
    assert trampoline(runtime, _env(), full).status == 0
    assert (runtime.logdir.parent / "full.log.1").stat().st_size == 100 * 1024 * 1024


# --- Any input: whatever the fast path answers, the shim answers the same ------------------------------

_WORDS = [
    "", "true", "TRUE", " true", "false", "stderr", "STDERR", "stdout", "rel/x.log", LOG, f"{LOG}.d/x.log",
    "debug", "INFO", "error", "strict", "standard", "eni", "eth", "v@", "0.4.0", "0.4", "1.0.0", "04.0.0",
    "9.9.9", "10.0.0.5", "2001:db8::5", "169.254.172.0/22", "fd00::ac:00/118", "a/b/c", "9001", " 9001",
    "jumbo", "caf\u00e9", "del\x7f", "a\\b", 'q"', "v4if0", "v6if0", "egress-cni", "aws-cni", NETNS, "-0",
]  # fmt: skip
_KEYS = [
    "cniVersion", "name", "type", "enabled", "mtu", "nodeIP", "ipam", "pluginLogFile", "pluginLogLevel",
    "podSGEnforcingMode", "vethPrefix", "runtimeConfig", "cniSocket", "delQueueDir",
    "cni.dev/valid-attachments", "cniVersions", "prevResult",
]  # fmt: skip
_INNER_KEYS = [
    "subnet", "ranges", "type", "name", "sandbox", "ips", "mac", "portMappings", "interfaces", "cniVersion",
    "io.kubernetes.cri.pod-annotations", "containerID", "ifname",
]  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**20), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(_WORDS), st.text(max_size=6),
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_INNER_KEYS) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _confs(draw: st.DrawFn) -> dict[str, object] | bytes:
    conf = _entry(draw(st.sampled_from(VERSIONS)), draw(st.sampled_from([4, 6])))
    prev = conf["prevResult"]
    assert isinstance(prev, dict)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["top", "top", "prev", "interface", "ipam", "runtime"]))
        if where == "top":
            key = draw(st.sampled_from(_KEYS))
            if draw(st.booleans()):
                conf.pop(key, None)
            else:
                conf[key] = draw(_values)
        elif where == "prev":
            prev[draw(st.sampled_from(["cniVersion", "interfaces", "ips", "extra"]))] = draw(_values)
        elif where == "interface" and isinstance(prev.get("interfaces"), list) and prev["interfaces"]:
            interface = draw(st.sampled_from(prev["interfaces"]))
            if isinstance(interface, dict):
                interface[draw(st.sampled_from(["name", "sandbox", "mac"]))] = draw(_values)
        elif where == "ipam":
            conf["ipam"] = {"ranges": draw(_values)} if draw(st.booleans()) else draw(_values)
        elif where == "runtime":
            conf["runtimeConfig"] = draw(st.dictionaries(st.sampled_from(_INNER_KEYS), _values, max_size=3))
    form = draw(st.sampled_from(["compact", "indented", "unicode", "duplicate", "truncated", "padded"]))
    if form == "compact":
        return json.dumps(conf, separators=(",", ":")).encode()
    if form == "indented":
        return json.dumps(conf, indent=draw(st.integers(0, 3))).encode()
    if form == "unicode":
        return json.dumps(conf, ensure_ascii=False).encode()
    text = json.dumps(conf).encode()
    if form == "duplicate":  # a key twice: the shim keeps the last
        key = draw(st.sampled_from(["name", "enabled", "type", "cniVersion"]))
        return b'{"' + key.encode() + b'": ' + json.dumps(draw(_values)).encode() + b", " + text[1:]
    if form == "truncated":
        return text[: draw(st.integers(0, len(text)))]
    return draw(st.sampled_from([b" ", b"\n\t", b"\xef\xbb\xbf", b"\x00"])) + text


@st.composite
def _envs(draw: st.DrawFn) -> dict[str, str]:
    extra: dict[str, str | None] = {}
    for name, choices in {
        "CNI_COMMAND": ["ADD", "add", "DEL", ""],
        "CNI_CONTAINERID": ["5f1c0ffee", "", "-x", "a" * 1025, "a.b_c-d", "caf\u00e9"],
        "CNI_IFNAME": ["eth0", "", ".", "..", "e" * 16, "e:0", "e/0", "eth\u00e9"],
        "CNI_NETNS": [NETNS, "", "rel", "/" + "n" * 4096],
        "CNI_PATH": ["/opt/cni/bin", "", "/" + "p" * 4096],
        "CNI_ARGS": [
            "", "IgnoreUnknown=1;FOO=bar", "FOO=bar", "K8S_POD_NAME=" + "w" * 254, "IgnoreUnknown=maybe",
            "K8S_POD_NAME=a;K8S_POD_NAME=b", ";;", "=x", "K8S_POD_NAME", "K8S_POD_NAME=caf\u00e9",
            "IgnoreUnknown=TRUE;X=1",
        ],
    }.items():  # fmt: skip
        if draw(st.integers(0, 4)) == 0:
            extra[name] = draw(st.sampled_from([*choices, None]))
    return _env(**extra)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=_envs(), conf=_confs())
def test_whatever_it_answers_the_shim_answers_the_same(
    runtime: Runtime, env: dict[str, str], conf: dict[str, object] | bytes
) -> None:
    answer = fast(runtime, env, conf)
    event("answered by the fast path" if answer is not None else "left to the shim")
    if answer is not None:
        assert answer.status == 0
        _same(runtime, env, conf, answer)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/bootstrap.sh installs it)")
def test_the_common_add_execs_nothing_and_opens_only_its_log(
    runtime: Runtime, tmp_path: pathlib.Path
) -> None:
    trace = tmp_path / "trace"
    argv = ["strace", "-f", "-qq", "-s", "4096", "-o", str(trace), "-e", "trace=%process,%file", "--"]
    runtime.logdir.mkdir(exist_ok=True)
    proc = subprocess.run(
        [*argv, str(runtime.complete / "egress-cni")], input=_stdin(runtime, _entry()), env=_env(),
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and json.loads(proc.stdout) == _entry()["prevResult"]
    calls = trace.read_text().splitlines()
    execs = [c for c in calls if "execve(" in c]
    assert len(execs) == 1 and execs[0].endswith("= 0"), "one exec: the trampoline's own, no interpreter"
    paths = {m for line in calls for m in re.findall(r'"(/[^"]*)"', line)}
    assert paths == {str(runtime.complete / "egress-cni"), "/proc/self/exe", str(runtime.log)}
