"""The agent's and controller's settings: upstream flag names, env, validation, every problem at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from vpccni.netpol.settings import (
    AGENT_OPTIONS,
    CONTROLLER_OPTIONS,
    AgentSettings,
    ControllerSettings,
    EnforcingMode,
    SettingsError,
    load_agent_settings,
    load_controller_settings,
)


def test_every_option_fills_a_field_and_every_field_has_an_option() -> None:
    assert {o.attr for o in AGENT_OPTIONS if o.attr} == {f.name for f in dataclasses.fields(AgentSettings)}
    assert {o.attr for o in CONTROLLER_OPTIONS if o.attr} == {
        f.name for f in dataclasses.fields(ControllerSettings)
    }
    assert load_agent_settings([], {}) == AgentSettings()
    pod = {"POD_NAMESPACE": "kube-system"}
    assert load_controller_settings([], pod) == ControllerSettings(leader_election_namespace="kube-system")


def test_the_upstream_manifest_args_and_env() -> None:
    argv = ["--enable-network-policy=true", "--enable-ipv6=false", "--enable-cloudwatch-logs=false",
            "--enable-policy-event-logs=false", "--log-file=/var/log/aws-routed-eni/network-policy-agent.log",
            "--metrics-bind-addr=:8162", "--health-probe-bind-addr=:8163", "--log-level=debug"]  # fmt: skip
    env = {
        "MY_NODE_NAME": "ip-10-0-0-4",
        "NETWORK_POLICY_ENFORCING_MODE": "strict",
        "VPCCNI_RUN_DIR": "/run/x",
    }
    s = load_agent_settings(argv, env)
    assert s.enabled and s.mode is EnforcingMode.STRICT and s.node_name == "ip-10-0-0-4"
    assert s.socket_path == Path("/run/x/npa.sock") and s.log_level == "debug"


def test_the_flag_wins_over_the_environment_and_upstream_bare_ports_are_accepted() -> None:
    s = load_agent_settings(["--enable-network-policy=false", "--metrics-bind-addr=8162"],
                            {"ENABLE_NETWORK_POLICY": "true", "MY_NODE_NAME": "n"})  # fmt: skip
    assert not s.enabled and s.metrics_address == ":8162"
    assert load_agent_settings([], {"ENABLE_NETWORK_POLICY": "true", "MY_NODE_NAME": "n"}).enabled
    assert load_agent_settings([], {"NETWORK_POLICY_ENFORCING_MODE": "none"}).mode is EnforcingMode.STANDARD


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        load_agent_settings(
            ["--enable-ipv6=true", "--metrics-bind-addr=http"],
            {"NETWORK_POLICY_ENFORCING_MODE": "paranoid", "VPCCNI_NETPOL_ENFORCE_TIMEOUT": "-1"},
        )
    text = str(info.value)
    for word in (
        "--enable-ipv6",
        "IPv6 mode is not supported",
        "--metrics-bind-addr",
        "paranoid",
        "ENFORCE_TIMEOUT",
    ):
        assert word in text


def test_enabling_needs_the_node_name_and_a_valid_veth_prefix() -> None:
    with pytest.raises(SettingsError, match="MY_NODE_NAME"):
        load_agent_settings(["--enable-network-policy=true"], {})
    with pytest.raises(SettingsError, match="VETHPREFIX"):
        load_agent_settings([], {"AWS_VPC_K8S_CNI_VETHPREFIX": "toolong"})


def test_controller_durations_and_chunks() -> None:
    pod = {"POD_NAMESPACE": "kube-system"}
    s = load_controller_settings(["--endpoint-chunk-size=50", "--pod-update-batch-period-duration=1s"], pod)
    assert (s.chunk_size, s.batch_s) == (50, 1.0)
    assert load_controller_settings(["--pod-update-batch-period-duration=250ms"], pod).batch_s == 0.25
    with pytest.raises(SettingsError, match="endpoint-chunk-size"):
        load_controller_settings(["--endpoint-chunk-size=0"], {})
    with pytest.raises(SystemExit):
        load_controller_settings(["--enable-configmap-check=true"], {})  # not offered: argparse refuses it


def test_leader_election_takes_the_pods_namespace(tmp_path: Path) -> None:
    none = tmp_path / "none"
    settings = load_controller_settings([], {"POD_NAMESPACE": "kube-system"}, namespace_file=none)
    assert settings.leader_election and settings.leader_election_namespace == "kube-system"
    assert settings.leader_election_id == "amazon-network-policy-controller-k8s"
    sa = tmp_path / "namespace"
    sa.write_text("netpol\n")
    assert load_controller_settings([], {}, namespace_file=sa).leader_election_namespace == "netpol"


def test_leader_election_outside_a_pod_asks_for_a_namespace(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--leader-election-namespace"):
        load_controller_settings([], {}, namespace_file=tmp_path / "none")
    none = tmp_path / "none"
    single = load_controller_settings(["--enable-leader-election=false"], {}, namespace_file=none)
    assert not single.leader_election
