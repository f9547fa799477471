"""The entrypoint and the probe as processes, against a stand-in agent that serves real gRPC health."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vpccni.cniplugin.testing import fake_standalone
from vpccni.ipamd.install import entrypoint
from vpccni.ipamd.install.health import IPAMD_HEALTH_SERVICE, HealthOutcome, check_health
from vpccni.ipamd.install.probe import main as probe_main
from vpccni.ipamd.install.testing import set_serving, start_health_server

PY = sys.executable


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    app = tmp_path / "app"
    fake_standalone(app)
    # Unix socket paths are limited to 108 bytes: keep the run dir short.
    run = Path(f"/tmp/vpccni-ep-{os.getpid()}-{tmp_path.name[-12:]}")
    run.mkdir()
    yield {"app": app, "bin": tmp_path / "bin", "confdir": tmp_path / "net.d", "run": run}
    for p in sorted(run.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    run.rmdir()


def _env(node: dict[str, Path], **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HOST_CNI_BIN_PATH": str(node["bin"]),
        "HOST_CNI_CONFDIR_PATH": str(node["confdir"]),
        "VPCCNI_RUN_DIR": str(node["run"]),
        "AWS_VPC_K8S_CNI_LOG_FILE": "stderr",
        **extra,
    }


def _entrypoint(node: dict[str, Path], agent: list[str], **extra: str) -> subprocess.Popen[bytes]:
    cmd = [
        PY,
        "-m",
        "vpccni.ipamd.install.entrypoint",
        "--app-dir",
        str(node["app"]),
        "--poll-interval",
        "0.1",
    ]
    return subprocess.Popen(
        [*cmd, "--agent", subprocess.list2cmdline(agent)], env=_env(node, **extra),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _agent(node: dict[str, Path], *args: str) -> list[str]:
    return [PY, "-m", "vpccni.ipamd.install.testing", "--socket", str(node["run"] / "ipamd.sock"), *args]


def test_conflist_is_written_only_once_ipamd_is_healthy_and_sigterm_is_forwarded(
    node: dict[str, Path],
) -> None:
    marker = node["run"] / "agent-started"
    proc = _entrypoint(
        node, _agent(node, "--serve-after", "1.0", "--exit-code", "0", "--marker", str(marker))
    )
    try:
        _wait_for(marker.exists)
        conflist = node["confdir"] / "10-aws.conflist"
        # The agent runs but is NOT_SERVING: no conflist yet, the shim is already installed.
        assert (node["bin"] / "aws-cni").exists()
        assert not conflist.exists()
        _wait_for(conflist.exists)
        conf = json.loads(conflist.read_text())
        assert conf["plugins"][0]["cniSocket"] == str(node["run"] / "cni.sock")
        assert proc.poll() is None  # the entrypoint stays with its child
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_agent_status_is_the_exit_status_and_no_conflist_when_it_never_got_healthy(
    node: dict[str, Path],
) -> None:
    proc = _entrypoint(node, _agent(node, "--fail-after", "0.2", "--exit-code", "3"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert not (node["confdir"] / "10-aws.conflist").exists()
    assert b"exited with status 3 before it was healthy" in out


def test_invalid_settings_stop_before_anything_is_installed(node: dict[str, Path]) -> None:
    proc = _entrypoint(node, _agent(node), AWS_VPC_K8S_CNI_VETHPREFIX="eth", ENABLE_PREFIX_DELEGATION="true")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"AWS_VPC_K8S_CNI_VETHPREFIX" in out and b"WARM_PREFIX_TARGET" in out
    assert not node["bin"].exists()


def test_probe_exit_codes_follow_grpc_health_probe(node: dict[str, Path]) -> None:
    sock = node["run"] / "ipamd.sock"
    addr = f"-addr=unix://{sock}"
    assert probe_main([addr, "-connect-timeout=200ms"]) == HealthOutcome.CONNECTION_FAILED
    server, servicer = start_health_server(sock, serving=False)
    try:
        assert probe_main([addr, "-connect-timeout=5s", "-rpc-timeout=5s"]) == HealthOutcome.NOT_SERVING
        set_serving(servicer, True)
        assert probe_main([addr, "-connect-timeout=5s", "-rpc-timeout=5s"]) == HealthOutcome.SERVING
        assert probe_main([addr, f"-service={IPAMD_HEALTH_SERVICE}"]) == HealthOutcome.SERVING
        assert probe_main([addr, "-service=unknown"]) == HealthOutcome.RPC_FAILED
        result = check_health(f"unix://{sock}", service=IPAMD_HEALTH_SERVICE)
        assert result.healthy
    finally:
        server.stop(grace=None).wait()
    with pytest.raises(SystemExit) as exc:
        probe_main([addr, "-connect-timeout=soon"])
    assert exc.value.code == HealthOutcome.INVALID_ARGUMENTS


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AWS_VPC_K8S_PLUGIN_LOG_FILE": "stdout"}, "AWS_VPC_K8S_PLUGIN_LOG_FILE"),
        ({"AWS_VPC_K8S_CNI_VETHPREFIX": "abcde"}, "AWS_VPC_K8S_CNI_VETHPREFIX"),
        ({"AWS_VPC_K8S_CNI_VETHPREFIX": "lo"}, "AWS_VPC_K8S_CNI_VETHPREFIX"),
        ({"POD_SECURITY_GROUP_ENFORCING_MODE": "loose"}, "POD_SECURITY_GROUP_ENFORCING_MODE"),
        ({"IP_COOLDOWN_PERIOD": "-1"}, "IP_COOLDOWN_PERIOD"),
        ({"AWS_VPC_ENI_MTU": "9002"}, "AWS_VPC_ENI_MTU"),
        ({"POD_MTU": "500"}, "POD_MTU"),
        ({"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "0"}, "WARM_PREFIX_TARGET"),
    ],
)
def test_upstreams_entrypoint_checks_stop_it_before_anything_runs(
    env: dict[str, str], variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setattr(entrypoint, "configure_stdout_logging", lambda: None)
    agent_marker = tmp_path / "agent-ran"
    environ = {"HOST_CNI_BIN_PATH": str(tmp_path / "bin"), **env}
    argv = ["--app-dir", str(tmp_path), "--agent", f"touch {agent_marker}"]
    assert entrypoint.main(argv, environ=environ) == 1
    assert variable in caplog.text
    assert not agent_marker.exists() and not (tmp_path / "bin").exists()
