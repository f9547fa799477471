"""The daemon's own logic: timers from the plan, startup failure handling, the API-server factory."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from vpccni.awsutils.errors import ImdsUnavailableError
from vpccni.awsutils.node import AwsNode
from vpccni.ipamd.adapters.kube import kube_api
from vpccni.ipamd.daemon import Daemon
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.pool.manager import PoolTimers
from vpccni.ipamd.settings import SettingsError, load_settings


def _plan(env: dict[str, str]) -> WiringPlan:
    return WiringPlan.from_settings(load_settings(env))


def test_timers_default_to_upstream_constants() -> None:
    plan = _plan({})
    assert plan.pool.timers == PoolTimers()
    assert plan.kube.timers.connect_timeout_s == 30.0


def test_tuning_variables_shorten_the_timers() -> None:
    env = {
        "VPCCNI_POOL_MONITOR_INTERVAL": "1",
        "VPCCNI_POOL_DECREASE_INTERVAL": "0.5",
        "VPCCNI_RECONCILE_INTERVAL": "2",
        "VPCCNI_MIN_ENI_AGE": "3",
        "VPCCNI_API_SERVER_WAIT": "0",
    }
    plan = _plan(env)
    timers = plan.pool.timers
    assert (timers.half_interval_s, timers.decrease_interval_s) == (0.5, 0.5)
    assert (timers.reconcile_idle_s, timers.min_eni_age_s) == (2.0, 3.0)
    assert plan.kube.timers.connect_timeout_s == 0.0


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
    daemon = Daemon(settings=load_settings({}))

    assert daemon.run() == 1
    assert signal.getsignal(signal.SIGTERM) is sigterm, "the previous signal handlers are restored"
    rendered = daemon.metrics.render().decode()
    assert 'awscni_ipamd_startup_duration_seconds_count{failure_reason="imds",success="false"' in rendered


def test_an_unexpected_error_at_start_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: Any) -> AwsNode:
        raise RuntimeError("bug")

    monkeypatch.setattr(AwsNode, "connect", broken)
    assert Daemon(settings=load_settings({})).run() == 1


def test_no_api_server_without_a_node_name_or_configuration(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="MY_NODE_NAME"):
        kube = _plan({}).kube
        kube_api(kube.endpoint, kube.client)
    env = {"MY_NODE_NAME": "n1", "KUBECONFIG": str(tmp_path / "missing")}
    with pytest.raises(FileNotFoundError, match="CLUSTER_ENDPOINT"):
        kube = _plan(env).kube
        kube_api(kube.endpoint, kube.client)
    env["CLUSTER_ENDPOINT"] = "http://127.0.0.1:1"
    kube = _plan(env).kube
    assert kube_api(kube.endpoint, kube.client) is not None


@pytest.mark.parametrize("env", [{"ANNOTATE_POD_IP": "true"}, {"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"}])
def test_features_that_need_the_api_server_stop_without_one(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """Upstream waits for the API server when these are on; with none configured, ipamd says so and exits."""
    daemon = Daemon(settings=load_settings(env))
    monkeypatch.setattr(daemon, "_connect_aws", lambda: None)
    assert daemon.run() == 1
    rendered = daemon.metrics.render().decode()
    assert 'failure_reason="apiserver",success="false"' in rendered
