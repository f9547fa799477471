"""The daemon's own logic: timers from settings, startup failure handling, the API-server factory."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from vpccni.awsutils.errors import ImdsUnavailableError
from vpccni.awsutils.node import AwsNode
from vpccni.ipamd.adapters.kube import kube_api_from_settings
from vpccni.ipamd.daemon import Daemon, timers_from
from vpccni.ipamd.pool.manager import PoolTimers
from vpccni.ipamd.settings import SettingsError, load_settings


def test_timers_default_to_upstream_constants() -> None:
    timers = timers_from(load_settings({}))
    assert timers.pool == PoolTimers()
    assert timers.kube.connect_timeout_s == 30.0


def test_tuning_variables_shorten_the_timers() -> None:
    env = {
        "VPCCNI_POOL_MONITOR_INTERVAL": "1",
        "VPCCNI_POOL_DECREASE_INTERVAL": "0.5",
        "VPCCNI_RECONCILE_INTERVAL": "2",
        "VPCCNI_MIN_ENI_AGE": "3",
        "VPCCNI_API_SERVER_WAIT": "0",
    }
    timers = timers_from(load_settings(env))
    assert (timers.pool.half_interval_s, timers.pool.decrease_interval_s) == (0.5, 0.5)
    assert (timers.pool.reconcile_idle_s, timers.pool.min_eni_age_s) == (2.0, 3.0)
    assert timers.kube.connect_timeout_s == 0.0


def test_bad_tuning_values_are_settings_errors() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"VPCCNI_POOL_MONITOR_INTERVAL": "0", "VPCCNI_MIN_ENI_AGE": "-1"})
    assert [e.split("=")[0] for e in err.value.errors] == [
        "VPCCNI_POOL_MONITOR_INTERVAL",
        "VPCCNI_MIN_ENI_AGE",
    ]


def test_imds_unreachable_at_start_exits_1_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(**_: Any) -> AwsNode:
        raise ImdsUnavailableError("connection refused")

    monkeypatch.setattr(AwsNode, "connect", unreachable)
    sigterm = signal.getsignal(signal.SIGTERM)
    daemon = Daemon(settings=load_settings({}), env={})

    assert daemon.run() == 1
    assert signal.getsignal(signal.SIGTERM) is sigterm, "the previous signal handlers are restored"
    rendered = daemon.metrics.render().decode()
    assert 'awscni_ipamd_startup_duration_seconds_count{failure_reason="imds",success="false"' in rendered


def test_an_unexpected_error_at_start_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: Any) -> AwsNode:
        raise RuntimeError("bug")

    monkeypatch.setattr(AwsNode, "connect", broken)
    assert Daemon(settings=load_settings({}), env={}).run() == 1


def test_no_api_server_without_a_node_name_or_configuration(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="MY_NODE_NAME"):
        kube_api_from_settings(load_settings({}), {})
    env = {"MY_NODE_NAME": "n1", "KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    with pytest.raises(FileNotFoundError, match="CLUSTER_ENDPOINT"):
        kube_api_from_settings(load_settings(env), env)
    env["CLUSTER_ENDPOINT"] = "http://127.0.0.1:1"
    assert kube_api_from_settings(load_settings(env), env) is not None
