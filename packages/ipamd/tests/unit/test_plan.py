"""The wiring plan: every setting reaches a component, and only through the plan.

`docs/configuration.md` promises that nothing is silently ignored: a variable marked implemented must change
what some component is configured with. Each registry entry is set to another valid value and the plan built
from it must differ from the default one (or ipamd must refuse the value, which is behaviour too).
"""

from __future__ import annotations

import ast
from dataclasses import asdict
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from vpccni.awsutils.ratelimit import RateLimitConfig
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import SettingsError, load_settings
from vpccni.ipamd.settings_registry import REGISTRY, SettingSpec, Support
from vpccni.k8sapi import KubeEndpoint

SRC = Path(__file__).resolve().parents[2] / "src" / "vpccni" / "ipamd"

# Values tried in turn until one parses to something other than the default.
CANDIDATES = (
    "true", "false", "2", "0", "100", "1500", "2.5", "x", "/tmp/vpccni-plan", "http://127.0.0.1:1",
    "127.0.0.1:1", "10.9.0.0/16", "0x40", '{"team": "blue"}', "standard", "none", "hashrandom", "INFO",
)  # fmt: skip
# What a variable needs beside it to pass the combination checks.
IPV6_MODE = {"ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"}
COMPANIONS = {
    "ENABLE_PREFIX_DELEGATION": {"WARM_PREFIX_TARGET": "1"},
    "ENABLE_IPv6": {"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"},
    # Settings of IPv6 mode's egress (IPv4 egress for pods) do something in IPv6 mode only.
    "ENABLE_V4_EGRESS": {**IPV6_MODE, "ENABLE_IPv6": "true"},
    "AWS_VPC_K8S_EGRESS_V4_PLUGIN_LOG_FILE": {**IPV6_MODE, "ENABLE_IPv6": "true"},
}


def _other_value(spec: SettingSpec) -> str:
    for raw in CANDIDATES:
        try:
            if spec.parse(raw) != spec.default:
                return raw
        except ValueError:
            continue
    raise AssertionError(f"no candidate value for {spec.name}: add one to CANDIDATES")


def _plan(env: dict[str, str]) -> WiringPlan:
    return WiringPlan.from_settings(load_settings(env))


def _changed_sections(a: WiringPlan, b: WiringPlan) -> list[str]:
    left, right = asdict(a), asdict(b)
    return [name for name in left if left[name] != right[name]]


@pytest.mark.parametrize("spec", [s for s in REGISTRY if s.attr is not None], ids=lambda s: s.name)
def test_every_setting_changes_the_plan(spec: SettingSpec) -> None:
    base = COMPANIONS.get(spec.name, {})
    raw = _other_value(spec)
    try:
        changed = _plan({**base, spec.name: raw})
    except SettingsError as err:
        # Refusing the value is what it does (ENABLE_IPv4=false); the message names the variable.
        assert any(e.startswith(spec.name) for e in err.errors), err
        return
    assert _changed_sections(_plan(base), changed), f"{spec.name}={raw} changes nothing ipamd is given"


def test_every_implemented_variable_is_a_settings_field() -> None:
    """Implemented means read into `Settings` (and so, by the test above, into the plan)."""
    assert [s.name for s in REGISTRY if s.support is Support.IMPLEMENTED and s.attr is None] == []


def test_only_the_plan_reads_settings_fields() -> None:
    """Modules that hold a `Settings` read nothing but introspection's env views from it (the daemon).

    The operator CLI (`cli/`) is the one other reader: it diagnoses a node by its settings, read leniently."""
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if path.name in ("plan.py", "settings.py") or path.parent.name == "cli":
            continue
        if "vpccni.ipamd.settings import" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if name in ("settings", "_settings") and node.attr != "env_view":
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {name}.{node.attr}")
    assert offenders == []


def test_aws_configuration_comes_from_the_settings() -> None:
    plan = _plan(
        {
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1338/",
            "AWS_EC2_ENDPOINT": "http://127.0.0.1:5000",
            "HTTP_TIMEOUT": "30",
            "VPC_CNI_VERSION": "v1.23.1",
            "VPCCNI_EC2_MUTATING_QPS": "2.5",
            "VPCCNI_EC2_MUTATING_BURST": "4",
            "VPCCNI_EC2_READ_QPS": "0",
            "VPCCNI_EC2_READ_BURST": "7",
            "CLUSTER_NAME": "prod",
            "ADDITIONAL_ENI_TAGS": '{"team": "net", "node.k8s.amazonaws.com/instance_id": "spoof"}',
        }
    )
    aws = plan.aws
    assert aws.imds.endpoint == "http://127.0.0.1:1338"
    client = aws.ec2_client("us-west-2")
    assert (client.region, client.endpoint_url, client.http_timeout_s) == (
        "us-west-2",
        "http://127.0.0.1:5000",
        30,
    )
    assert "amazon-vpc-cni-k8s/v1.23.1" in client.user_agent_extra()
    assert aws.rate_limit == RateLimitConfig(mutating_qps=2.5, mutating_burst=4, read_qps=0, read_burst=7)
    assert aws.tags.managed_tags("i-1") == {
        "team": "net",
        "node.k8s.amazonaws.com/instance_id": "i-1",
        "cluster.k8s.amazonaws.com/name": "prod",
        "eks:eni:owner": "amazon-vpc-cni",
    }


def test_defaults_are_upstreams() -> None:
    plan = _plan({})
    assert plan.aws.imds.endpoint == "http://169.254.169.254"
    assert plan.aws.ec2_endpoint_url is None and plan.aws.http_timeout_s == 10
    assert plan.aws.rate_limit == RateLimitConfig()
    assert plan.kube.endpoint == KubeEndpoint() and not plan.kube.wait_for_server
    assert plan.serve.introspection_address == "127.0.0.1:61679" and plan.serve.metrics_address == ":61678"
    assert plan.store.backing_store == "/var/run/aws-node/ipam.json" and plan.store.ip_cooldown_s == 30


def test_http_timeout_below_upstreams_minimum_is_refused() -> None:
    """Upstream's SDK never goes below 10 s; a smaller value is an error, not silently raised to 10."""
    with pytest.raises(SettingsError, match="HTTP_TIMEOUT"):
        load_settings({"HTTP_TIMEOUT": "3"})


def test_kubernetes_endpoint_and_features_that_need_the_server() -> None:
    plan = _plan(
        {
            "CLUSTER_ENDPOINT": "https://10.0.0.1:6443",
            "KUBERNETES_SERVICE_HOST": "10.100.0.1",
            "KUBERNETES_SERVICE_PORT": "8443",
            "MY_NODE_NAME": "n1",
            "ANNOTATE_POD_IP": "true",
        }
    )
    assert plan.kube.endpoint == KubeEndpoint(
        cluster_endpoint="https://10.0.0.1:6443", service_host="10.100.0.1", service_port=8443
    )
    assert plan.kube.client.node_name == "n1"
    assert plan.kube.annotate_pod_ip and plan.kube.wait_for_server
    assert _plan({"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"}).kube.wait_for_server


def test_disabled_servers_have_no_address() -> None:
    plan = _plan({"DISABLE_INTROSPECTION": "true", "DISABLE_METRICS": "true"})
    assert plan.serve.introspection_address is None and plan.serve.metrics_address is None


def test_snat_exclusions_reach_the_host_network_and_the_grpc_replies() -> None:
    plan = _plan({"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.9.0.0/16"})
    assert plan.host.exclude_snat_cidrs == plan.serve.exclude_snat_cidrs == (IPv4Network("10.9.0.0/16"),)
