"""The bundled aws-cni executable, run like a runtime runs it (system python3 -I -S, env + stdin)."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
from vpccni.cniplugin import delqueue, versions, wire
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.testing import FakeEndpoint
from vpccni.cniplugin.version import VERSION

RESULT = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "eni0123456789a"}, {"name": "eth0", "sandbox": "/n", "mac": "2"}],
    "ips": [{"version": "4", "address": "10.0.1.23/32", "interface": 1}],
    "dns": {},
}


@pytest.fixture
def node(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    """A pretend node: socket path, queue dir, log file and a pod 'netns': the shim checks only that it is a
    namespace file that is not its own network namespace, so another kind of namespace does in unit tests."""
    netns = tmp_path / "netns-pod"
    netns.symlink_to("/proc/self/ns/uts")
    return {
        "sock": tmp_path / "cni.sock",
        "queue": tmp_path / "del-queue",
        "log": tmp_path / "log" / "plugin.log",
        "netns": netns,
    }


def _conf(node: dict[str, pathlib.Path], version: str = "0.4.0", **extra: object) -> dict[str, object]:
    return {
        "cniVersion": version, "name": "aws-cni", "type": "aws-cni", "cniSocket": str(node["sock"]),
        "delQueueDir": str(node["queue"]), "pluginLogFile": str(node["log"]), **extra,
    }  # fmt: skip


def _env(node: dict[str, pathlib.Path], command: str, **extra: str) -> dict[str, str]:
    env = {
        "CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": "eth0",
        "CNI_NETNS": str(node["netns"]), "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
    }  # fmt: skip
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _assert_error(res, code: int) -> dict[str, object]:
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
    assert res.stdout.count("\n") == 1
    body = res.json()
    assert set(body) == {"cniVersion", "code", "msg", "details"}
    assert body["code"] == code, body
    return body


# --- answered locally --------------------------------------------------------------------------------


def test_version_lists_every_supported_version(run_shim) -> None:
    res = run_shim({"CNI_COMMAND": "VERSION"})
    assert res.returncode == 0
    assert res.json() == {"cniVersion": "1.1.0", "supportedVersions": list(versions.SUPPORTED_VERSIONS)}
    echoed = run_shim({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.4.0"})
    assert echoed.json()["cniVersion"] == "0.4.0"
    garbage = run_shim({"CNI_COMMAND": "VERSION"}, raw=b"\x00not json")
    assert garbage.returncode == 0 and garbage.json()["cniVersion"] == "1.1.0"


def test_no_command_prints_about_on_stderr(run_shim) -> None:
    res = run_shim({})
    assert res.returncode == 0 and res.stdout == ""
    assert f"AWS CNI v{VERSION}" in res.stderr


# --- every error code from crafted input -------------------------------------------------------------


def test_bad_json_is_6(run_shim, node) -> None:
    _assert_error(run_shim(_env(node, "ADD"), raw=b'{"cniVersion": '), ErrorCode.DECODING_FAILURE)


def test_missing_env_is_4_and_names_it(run_shim, node) -> None:
    body = _assert_error(run_shim(_env(node, "ADD", CNI_CONTAINERID=None), _conf(node)), 4)
    assert "CNI_CONTAINERID" in body["msg"]


def test_unknown_command_is_4(run_shim, node) -> None:
    _assert_error(run_shim(_env(node, "FROB"), _conf(node)), ErrorCode.INVALID_ENVIRONMENT_VARIABLES)


@pytest.mark.parametrize(
    "args", ["K8S_POD_NAME", "UNKNOWN=1", "K8S_POD_NAME=" + "x" * 5000, "IgnoreUnknown=1;K8S_POD_NAME=\x07"]
)
def test_bad_cni_args_is_4(run_shim, node, args: str) -> None:
    body = _assert_error(run_shim(_env(node, "ADD", CNI_ARGS=args), _conf(node)), 4)
    assert "CNI_ARGS" in body["msg"]


def test_unsupported_version_is_1(run_shim, node) -> None:
    body = _assert_error(run_shim(_env(node, "ADD"), _conf(node, version="2.0.0")), 1)
    assert body["cniVersion"] == "1.1.0"


def test_check_before_0_4_0_is_1(run_shim, node) -> None:
    _assert_error(run_shim(_env(node, "CHECK"), _conf(node, version="0.3.1")), 1)


@pytest.mark.parametrize("command", ["STATUS", "GC"])
def test_status_and_gc_before_1_1_0_are_1(run_shim, node, command: str) -> None:
    _assert_error(run_shim(_env(node, command), _conf(node, version="1.0.0")), 1)


def test_unsupported_field_is_2(run_shim, node) -> None:
    conf = _conf(node, runtimeConfig={"ips": ["10.9.9.9/32"]})
    body = _assert_error(run_shim(_env(node, "ADD"), conf), ErrorCode.UNSUPPORTED_FIELD)
    assert "runtimeConfig.ips" in body["msg"] and "10.9.9.9" in body["msg"]


@pytest.mark.parametrize(
    "extra", [{"vethPrefix": "toolong"}, {"pluginLogFile": "stdout"}, {"name": "no spaces"}, {"mtu": {}}]
)
def test_invalid_config_is_7(run_shim, node, extra) -> None:
    res = run_shim(_env(node, "ADD"), _conf(node, **extra))
    body = _assert_error(res, ErrorCode.INVALID_NETWORK_CONFIG)
    assert body["cniVersion"] == "0.4.0"


def test_oversized_stdin_is_7(run_shim, node) -> None:
    _assert_error(run_shim(_env(node, "ADD"), _conf(node, pad="x" * (2 << 20))), 7)


def test_hostile_nesting_is_6_not_a_crash(run_shim, node) -> None:
    _assert_error(run_shim(_env(node, "ADD"), raw=b"[" * 200000), ErrorCode.DECODING_FAILURE)


def test_add_with_a_vanished_netns_is_4(run_shim, node) -> None:
    body = _assert_error(run_shim(_env(node, "ADD", CNI_NETNS=str(node["netns"]) + "-gone"), _conf(node)), 4)
    assert "network namespace is gone" in body["msg"]


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_fifo_or_plain_file_as_netns_is_4_without_hanging(run_shim, node, tmp_path, command) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "plain"
    plain.write_text("")
    for path in (fifo, plain):
        body = _assert_error(run_shim(_env(node, command, CNI_NETNS=str(path)), _conf(node)), 4)
        assert "is not a namespace file" in body["msg"]


def test_del_with_a_fifo_as_netns_still_releases(run_shim, node, tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with FakeEndpoint(str(node["sock"]), lambda r, fd: None) as endpoint:
        done = run_shim(_env(node, "DEL", CNI_NETNS=str(fifo)), _conf(node))
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    assert [r.request.has_netns_fd for r in endpoint.received] == [False]


@pytest.mark.parametrize("version", ["9.9.9", "v1.0.0", "1.0.0-rc1", "1.0.0.0"])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_an_unsupported_or_invalid_cni_version_is_1_for_every_command(
    run_shim, node, command: str, version: str
) -> None:
    # As the reference plugins (libcni's skel) decide: DEL too. Nothing is queued or forwarded.
    with FakeEndpoint(str(node["sock"]), lambda r, fd: None) as endpoint:
        _assert_error(run_shim(_env(node, command), _conf(node, version)), ErrorCode.INCOMPATIBLE_CNI_VERSION)
    assert endpoint.received == []
    assert delqueue.pending(str(node["queue"])) == []


def test_own_netns_is_refused(run_shim, node) -> None:
    body = _assert_error(run_shim(_env(node, "ADD", CNI_NETNS="/proc/self/ns/net"), _conf(node)), 4)
    assert "refusing" in body["msg"]


# --- ipamd unreachable -------------------------------------------------------------------------------


def test_unreachable_add_is_11_with_what_to_check(run_shim, node) -> None:
    body = _assert_error(run_shim(_env(node, "ADD"), _conf(node)), ErrorCode.TRY_AGAIN_LATER)
    assert "is aws-node running?" in body["msg"] and str(node["sock"]) in body["msg"]


def test_unreachable_status_is_50(run_shim, node) -> None:
    _assert_error(run_shim(_env(node, "STATUS"), _conf(node, version="1.1.0")), ErrorCode.NOT_AVAILABLE)


@pytest.mark.parametrize(("command", "version"), [("CHECK", "0.4.0"), ("GC", "1.1.0")])
def test_unreachable_check_and_gc_are_11(run_shim, node, command: str, version: str) -> None:
    _assert_error(run_shim(_env(node, command), _conf(node, version=version)), ErrorCode.TRY_AGAIN_LATER)


def test_unreachable_del_is_queued_and_succeeds(run_shim, node) -> None:
    prev = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "mac": "2"}], "ips": []}
    res = run_shim(_env(node, "DEL"), _conf(node, prevResult=prev))
    assert (res.returncode, res.stdout) == (0, "")
    (entry,) = list(delqueue.drain(str(node["queue"])))
    assert (entry.request.command, entry.request.container_id, entry.request.ifname) == (
        "DEL",
        "c0ffee",
        "eth0",
    )
    assert entry.request.k8s_args.pod_name == "web-0"
    assert entry.request.netconf["prevResult"] == prev
    log = [json.loads(line) for line in node["log"].read_text().splitlines()]
    assert any("DEL queued" in rec["msg"] for rec in log)


def test_full_queue_makes_del_fail_with_11(run_shim, node) -> None:
    node["queue"].mkdir()
    for i in range(delqueue.MAX_ENTRIES):
        (node["queue"] / f"{i:020d}-1-0000.json").write_text("{}")
    body = _assert_error(run_shim(_env(node, "DEL"), _conf(node)), ErrorCode.TRY_AGAIN_LATER)
    assert "full" in body["msg"]
    assert len(delqueue.pending(str(node["queue"]))) == delqueue.MAX_ENTRIES


# --- against a live endpoint -------------------------------------------------------------------------


def test_add_passes_the_netns_fd_and_prints_ipamd_result(run_shim, node) -> None:
    with FakeEndpoint(str(node["sock"]), lambda request, fd: RESULT) as endpoint:
        res = run_shim(_env(node, "ADD"), _conf(node))
    assert res.returncode == 0, res.stdout
    assert res.json() == RESULT
    (got,) = endpoint.received
    st = os.stat(node["netns"])
    assert got.fd_identity == (st.st_dev, st.st_ino)
    assert got.request.version == VERSION
    assert (got.request.command, got.request.container_id, got.request.netns_path) == (
        "ADD", "c0ffee", str(node["netns"]),
    )  # fmt: skip
    assert got.request.k8s_args.pod_namespace == "default"
    assert got.request.cni_version == "0.4.0"
    assert got.request.netconf["cniSocket"] == str(node["sock"])
    assert got.peer[1] == os.getuid()
    log = [json.loads(line) for line in node["log"].read_text().splitlines()]
    assert {rec["level"] for rec in log} <= {"debug", "info"} and log[0]["caller"] == "aws-cni"


def test_del_with_a_vanished_netns_is_forwarded_without_fd(run_shim, node) -> None:
    with FakeEndpoint(str(node["sock"]), lambda request, fd: None) as endpoint:
        gone = run_shim(_env(node, "DEL", CNI_NETNS=str(node["netns"]) + "-gone"), _conf(node))
        unset = run_shim(_env(node, "DEL", CNI_NETNS=""), _conf(node))
    assert (gone.returncode, gone.stdout, unset.returncode, unset.stdout) == (0, "", 0, "")
    assert [r.fd_identity for r in endpoint.received] == [None, None]
    assert [r.request.has_netns_fd for r in endpoint.received] == [False, False]


def test_ipamd_errors_reach_the_runtime_unchanged(run_shim, node) -> None:
    def refuse(request: wire.Request, fd: int | None) -> object:
        raise CNIError(ErrorCode.TRY_AGAIN_LATER, "no free IP address: the warm pool is empty", "ENI limit")

    with FakeEndpoint(str(node["sock"]), refuse):
        body = _assert_error(run_shim(_env(node, "ADD"), _conf(node)), 11)
    assert body == {
        "cniVersion": "0.4.0", "code": 11, "msg": "no free IP address: the warm pool is empty",
        "details": "ENI limit",
    }  # fmt: skip


def test_status_ok_prints_nothing(run_shim, node) -> None:
    with FakeEndpoint(str(node["sock"]), lambda request, fd: None) as endpoint:
        res = run_shim(
            _env(node, "STATUS", CNI_CONTAINERID=None, CNI_IFNAME=None, CNI_NETNS=None), _conf(node, "1.1.0")
        )
    assert (res.returncode, res.stdout) == (0, "")
    assert endpoint.received[0].request.command == "STATUS"


def test_a_non_object_add_result_is_999(run_shim, node) -> None:
    with FakeEndpoint(str(node["sock"]), lambda request, fd: ["not", "a", "result"]):
        body = _assert_error(run_shim(_env(node, "ADD"), _conf(node)), ErrorCode.INTERNAL)
    assert "without a result" in body["msg"]


def test_logs_default_to_stderr_never_stdout(run_shim, node) -> None:
    conf = _conf(node)
    del conf["pluginLogFile"]
    res = run_shim(_env(node, "ADD"), conf)
    _assert_error(res, 11)
    assert '"level": "error"' in res.stderr


# --- what each call loads (the start-up budget): a behavioural check of the import set ---------------

# Pure-Python stdlib modules that used to dominate start-up: none may load on a hot path.
HEAVY = {"json", "socket", "enum", "re", "os", "runpy", "importlib.util", "__future__", "typing", "logging"}
# C modules the hot path may use although this interpreter does not build them in (lib-dynload).
EXTENSIONS = {"_json"}


def _assert_lean(res, interpreter_modules: tuple[set[str], set[str]]) -> None:
    at_start, builtin = interpreter_modules
    loaded = res.imported() - at_start
    assert loaded, "no -X importtime output: the check would prove nothing"
    assert "vpccni.cniplugin.main" in loaded
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
    foreign = {m for m in loaded if not m.startswith("vpccni")} - builtin - EXTENSIONS
    assert not foreign, f"hot path loads stdlib modules: {sorted(foreign)}"


def test_version_loads_only_builtins_and_the_shim(run_shim, interpreter_modules) -> None:
    res = run_shim({"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.0.0"}, python_args=("-X", "importtime"))
    assert res.returncode == 0 and json.loads(res.stdout)["cniVersion"] == "1.0.0"
    _assert_lean(res, interpreter_modules)


@pytest.mark.parametrize(
    ("command", "version", "answer"),
    [("ADD", "1.0.0", RESULT), ("DEL", "1.0.0", None), ("CHECK", "1.0.0", None),
     ("STATUS", "1.1.0", None), ("GC", "1.1.0", None)],
)  # fmt: skip
def test_forwarded_commands_load_only_builtins_and_the_shim(
    run_shim, node, interpreter_modules, command: str, version: str, answer: object
) -> None:
    node["log"].parent.mkdir()  # as on a node after the first call; creating it may import os
    env = _env(node, command)
    if command in ("STATUS", "GC"):
        env = {k: v for k, v in env.items() if k not in ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS")}
    with FakeEndpoint(str(node["sock"]), lambda request, fd: answer) as endpoint:
        res = run_shim(env, _conf(node, version), python_args=("-X", "importtime"))
    assert res.returncode == 0, res.stdout
    assert [r.request.command for r in endpoint.received] == [command]
    assert node["log"].read_text().count("\n") == 2, "debug logging (the default) is part of the hot path"
    _assert_lean(res, interpreter_modules)


def test_an_error_answer_stays_lean(run_shim, node, interpreter_modules) -> None:
    node["log"].parent.mkdir()
    res = run_shim(_env(node, "ADD"), _conf(node), python_args=("-X", "importtime"))  # ipamd not there
    _assert_error(res, ErrorCode.TRY_AGAIN_LATER)
    _assert_lean(res, interpreter_modules)


# --- egress-cni: its ADD answered from its prevResult when aws-cni's ADD wired the egress -------------------

EGRESS_LISTED = {
    **RESULT,
    "interfaces": [
        *RESULT["interfaces"],  # type: ignore[list-item]
        {"name": "egr0123456789a", "mac": "02:00:00:00:00:01"},
        {"name": "v4if0", "mac": "02:00:00:00:00:02", "sandbox": "/n"},
    ],
}


def _egress_conf(node: dict[str, pathlib.Path], **extra: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "type": "egress-cni", "enabled": "true", "mtu": "9001", "nodeIP": "10.0.0.5",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "169.254.172.0/22"}]]},
    }  # fmt: skip
    return _conf(node, **{**entry, **extra})


def test_egress_cnis_add_answers_with_its_prev_result_and_loads_no_socket(
    run_shim, node, interpreter_modules
) -> None:
    node["log"].parent.mkdir()
    res = run_shim(
        _env(node, "ADD"), _egress_conf(node, prevResult=EGRESS_LISTED), python_args=("-X", "importtime")
    )
    assert res.returncode == 0, res.stdout
    assert res.json() == EGRESS_LISTED, "prevResult as it came: ipamd is not asked (there is none here)"
    _assert_lean(res, interpreter_modules)
    assert not res.imported() & {"_socket", "vpccni.cniplugin.wire"}, "no round trip, no socket module"
    assert "egress wired with aws-cni's ADD" in node["log"].read_text()


@pytest.mark.parametrize(
    "extra",
    [
        {"prevResult": RESULT},  # aws-cni's ADD did not list it: ipamd wires it now
        {"prevResult": EGRESS_LISTED, "enabled": "false"},  # ipamd undoes what aws-cni's ADD wired
        {"prevResult": {**EGRESS_LISTED, "cniVersion": "1.0.0"}},  # another version: ipamd converts it
    ],
)
def test_egress_cnis_other_adds_go_to_ipamd(run_shim, node, extra: dict[str, object]) -> None:
    with FakeEndpoint(str(node["sock"]), lambda request, fd: EGRESS_LISTED) as endpoint:
        res = run_shim(_env(node, "ADD"), _egress_conf(node, **extra))
    assert res.returncode == 0 and res.json() == EGRESS_LISTED, res.stdout
    assert [r.request.command for r in endpoint.received] == ["ADD"]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"mtu": "jumbo"}, "mtu"),
        ({"ipam": {"ranges": [["169.254.172.0/22"]]}}, "ipam.ranges"),
        ({"ipam": {"ranges": [[{"subnet": "169.254.172.0"}]]}}, "not a CIDR"),
        ({"prevResult": ["not", "an", "object"]}, "prevResult"),
        ({"nodeIP": 10}, "nodeIP"),
    ],
)
@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_a_malformed_egress_entry_is_error_7_without_asking_ipamd(
    run_shim, node, extra: dict[str, object], problem: str, command: str
) -> None:
    res = run_shim(_env(node, command), _egress_conf(node, **{"prevResult": EGRESS_LISTED, **extra}))
    body = _assert_error(res, ErrorCode.INVALID_NETWORK_CONFIG)
    assert problem in str(body["msg"])
