"""Settings: upstream names and defaults, Go booleans, ranges, unsupported features, combinations, docs."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from vpccni.ipamd.settings import Settings, SettingsError, load_settings, settings_fields
from vpccni.ipamd.settings_registry import REGISTRY, Support

ROOT = Path(__file__).resolve().parents[4]


def test_defaults_match_upstream() -> None:
    s = load_settings({})
    assert (s.warm_eni_target, s.warm_ip_target, s.minimum_ip_target, s.warm_prefix_target) == (1, 0, 0, 0)
    assert s.ip_cooldown_period_s == 30 and s.max_eni_cap is None
    assert s.eni_mtu == 9001 and s.pod_mtu == 9001 and s.veth_prefix == "eni"
    assert s.randomize_snat == "prng" and s.connmark == 0x80 and s.node_port_support
    assert s.introspection_bind_address == "127.0.0.1:61679" and s.metrics_bind_address == ":61678"
    assert s.backing_store == "/var/run/aws-node/ipam.json"
    assert s.log_file == "/host/var/log/aws-routed-eni/ipamd.log" and s.log_level == "DEBUG"
    assert s.enable_subnet_discovery and s.manage_untagged_eni and s.enable_ipv4
    assert str(s.ipamd_socket) == "/var/run/aws-node/ipamd.sock"
    assert str(s.cni_socket) == "/var/run/aws-node/cni.sock"
    assert str(s.del_queue_dir) == "/var/run/aws-node/del-queue"
    assert s.add_wait_timeout_s == 10.0 and s.grpc_tcp_address == ""
    assert s.provisioning_enabled and s.leaked_eni_cleanup_enabled and not s.warm_ip_targets_defined


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("TRUE", True),
        ("t", True),
        ("1", True),
        ("True", True),
        ("FALSE", False),
        ("f", False),
        ("0", False),
        ("fAlSe", False),
    ],
)
def test_booleans_parse_like_go_case_insensitively(raw: str, expected: bool) -> None:
    assert load_settings({"AWS_VPC_K8S_CNI_EXTERNALSNAT": raw}).external_snat is expected


def test_empty_value_means_unset() -> None:
    assert load_settings({"WARM_ENI_TARGET": "", "AWS_VPC_K8S_CNI_EXTERNALSNAT": " "}).warm_eni_target == 1


def test_values_parse() -> None:
    s = load_settings(
        {
            "WARM_IP_TARGET": "5",
            "MINIMUM_IP_TARGET": "10",
            "MAX_ENI": "3",
            "POD_MTU": "1500",
            "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.1.0.0/16, 192.168.0.0/24",
            "AWS_VPC_K8S_CNI_CONNMARK": "0x100",
            "AWS_VPC_K8S_CNI_RANDOMIZESNAT": "HashRandom",
            "ADDITIONAL_ENI_TAGS": '{"team":"blue","k8s.amazonaws.com/x":"dropped"}',
            "INTROSPECTION_BIND_ADDRESS": "unix:/run/introspect.sock",
            "AWS_VPC_K8S_CNI_LOGLEVEL": "warning",
            "VPCCNI_RUN_DIR": "/tmp/aws-node",
            "VPCCNI_ADD_WAIT_TIMEOUT": "2.5",
            "VPCCNI_GRPC_TCP_ADDRESS": "127.0.0.1:50051",
            "AWS_VPC_K8S_CNI_LOG_FILE": "stdout",
            "ENABLE_IMDS_ONLY_MODE": "true",
        }
    )
    assert s.warm_ip_targets_defined and s.max_eni_cap == 3 and s.pod_mtu == 1500 and s.eni_mtu == 9001
    assert s.exclude_snat_cidrs == (IPv4Network("10.1.0.0/16"), IPv4Network("192.168.0.0/24"))
    assert s.connmark == 0x100 and s.randomize_snat == "hashrandom"
    assert s.eni_tags == {"team": "blue"}
    assert s.log_level == "WARN" and s.log_file == "stdout"
    assert str(s.cni_socket) == "/tmp/aws-node/cni.sock" and s.add_wait_timeout_s == 2.5
    assert not s.provisioning_enabled and not s.leaked_eni_cleanup_enabled


def test_all_errors_are_collected_and_name_the_variable() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(
            {
                "WARM_IP_TARGET": "-1",
                "AWS_VPC_ENI_MTU": "100",
                "AWS_VPC_K8S_CNI_VETHPREFIX": "vlan",
                "AWS_VPC_K8S_CNI_RANDOMIZESNAT": "fast",
                "ADDITIONAL_ENI_TAGS": "[1]",
                "HTTP_TIMEOUT": "5",
                "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.0.0.0/8,bogus,fd00::/8",
                "ENABLE_POD_ENI": "yes",
                "AWS_VPC_K8S_PLUGIN_LOG_FILE": "stdout",
                "INTROSPECTION_BIND_ADDRESS": "nowhere",
                "VPCCNI_ADD_WAIT_TIMEOUT": "0",
                "AWS_VPC_CNI_NODE_PORT_SUPPORT": "maybe",
            }
        )
    errors = err.value.errors
    names = [e.split("=", 1)[0] for e in errors]
    assert names == [
        "WARM_IP_TARGET",
        "AWS_VPC_K8S_CNI_RANDOMIZESNAT",
        "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
        "AWS_VPC_CNI_NODE_PORT_SUPPORT",
        "AWS_VPC_ENI_MTU",
        "AWS_VPC_K8S_CNI_VETHPREFIX",
        "AWS_VPC_K8S_PLUGIN_LOG_FILE",
        "INTROSPECTION_BIND_ADDRESS",
        "ADDITIONAL_ENI_TAGS",
        "HTTP_TIMEOUT",
        "ENABLE_POD_ENI",
        "VPCCNI_ADD_WAIT_TIMEOUT",
    ]
    text = str(err.value)
    assert "valid: 576-9001" in text and "bogus, fd00::/8" in text and "prng|hashrandom|none" in text
    assert "ENABLE_POD_ENI='yes': expected a boolean (true/false, 1/0, t/f); valid: boolean" in text


@pytest.mark.parametrize("value", ["0.0.0.0:50051", ":50051", "10.0.0.5:50051", "[::]:50051"])
def test_grpc_tcp_is_loopback_only(value: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"VPCCNI_GRPC_TCP_ADDRESS": value})
    assert "loopback" in str(err.value)
    for ok in ("127.0.0.1:50051", "localhost:50051", "[::1]:50051"):
        assert load_settings({"VPCCNI_GRPC_TCP_ADDRESS": ok}).grpc_tcp_address == ok


def test_ipv4_off_is_rejected() -> None:
    with pytest.raises(SettingsError, match="ENABLE_IPv4=false"):
        load_settings({"ENABLE_IPv4": "false"})


def test_prefix_delegation_needs_a_target() -> None:
    with pytest.raises(SettingsError, match="WARM_PREFIX_TARGET"):
        load_settings({"ENABLE_PREFIX_DELEGATION": "true"})
    for target in ("WARM_PREFIX_TARGET", "WARM_IP_TARGET", "MINIMUM_IP_TARGET"):
        assert load_settings({"ENABLE_PREFIX_DELEGATION": "true", target: "1"}).enable_prefix_delegation


def test_security_groups_for_pods_settings() -> None:
    on = load_settings({"ENABLE_POD_ENI": "TRUE", "VPCCNI_POD_ENI_WAIT": "2.5"})
    assert on.enable_pod_eni and on.pod_eni_wait_s == 2.5 and on.pod_sg_enforcing_mode == "strict"
    assert (
        load_settings({"POD_SECURITY_GROUP_ENFORCING_MODE": "Standard"}).pod_sg_enforcing_mode == "standard"
    )
    with pytest.raises(SettingsError, match=r"POD_SECURITY_GROUP_ENFORCING_MODE='loose'.*strict, standard"):
        load_settings({"POD_SECURITY_GROUP_ENFORCING_MODE": "loose"})
    with pytest.raises(SettingsError, match="VPCCNI_POD_ENI_WAIT"):
        load_settings({"VPCCNI_POD_ENI_WAIT": "-1"})


def test_deprecated_no_ops_are_accepted() -> None:
    load_settings(
        {
            "ENABLE_NFTABLES": "true",
            "AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER": "false",
            "POD_SECURITY_GROUP_ENFORCING_MODE": "standard",
        }
    )


def test_registry_declares_every_field_once() -> None:
    names = [spec.name for spec in REGISTRY]
    assert len(names) == len(set(names))
    attrs = [spec.attr for spec in REGISTRY if spec.attr]
    assert len(attrs) == len(set(attrs)) and set(attrs) == settings_fields()
    for spec in REGISTRY:
        assert spec.meaning and spec.valid
        if spec.support is Support.UNSUPPORTED:
            assert spec.feature and spec.attr is None
        assert spec.name.startswith("VPCCNI_") or not spec.name.startswith("VPCCNI")


def test_env_view_renders_like_upstream() -> None:
    s = load_settings({"WARM_IP_TARGET": "3"})
    assert s.env_view(("WARM_IP_TARGET", "ENABLE_SUBNET_DISCOVERY", "AWS_VPC_K8S_CNI_CONNMARK")) == {
        "WARM_IP_TARGET": "3",
        "ENABLE_SUBNET_DISCOVERY": "true",
        "AWS_VPC_K8S_CNI_CONNMARK": "128",
    }


def test_settings_are_frozen() -> None:
    s: Settings = load_settings({})
    with pytest.raises(AttributeError):
        s.warm_eni_target = 2  # type: ignore[misc]


def test_configuration_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


IPV6 = {
    "ENABLE_IPv6": "true",
    "ENABLE_IPv4": "false",
    "ENABLE_PREFIX_DELEGATION": "true",
    "WARM_PREFIX_TARGET": "1",
}


def test_ipv6_mode_is_upstreams_combination() -> None:
    s = load_settings(IPV6)
    assert s.enable_ipv6 and not s.enable_ipv4 and s.enable_v4_egress and not s.enable_v6_egress


IPV6_CASES = ["both", "neither", "no-pd", "custom-networking", "v6-egress", "eni-mtu", "pod-mtu"]
IPV6_CASES += ["multi-nic"]


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"ENABLE_IPv6": "true"}, "ENABLE_IPv6=true and ENABLE_IPv4=true: exactly one of them must be true"),
        (
            {"ENABLE_IPv4": "false"},
            "ENABLE_IPv4=false and ENABLE_IPv6=false: exactly one of them must be true",
        ),
        (
            {**IPV6, "ENABLE_PREFIX_DELEGATION": "false"},
            "ENABLE_IPv6=true needs ENABLE_PREFIX_DELEGATION=true",
        ),
        ({**IPV6, "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"}, "custom networking is not offered in IPv6"),
        ({**IPV6, "ENABLE_V6_EGRESS": "true"}, "ENABLE_V6_EGRESS=true with ENABLE_IPv6=true"),
        (
            {**IPV6, "AWS_VPC_ENI_MTU": "1200"},
            "AWS_VPC_ENI_MTU=1200 with ENABLE_IPv6=true: IPv6 needs an MTU",
        ),
        ({**IPV6, "POD_MTU": "1000"}, "POD_MTU=1000 with ENABLE_IPv6=true"),
        (
            {**IPV6, "ENABLE_MULTI_NIC": "true"},
            "ENABLE_MULTI_NIC=true with ENABLE_IPv6=true: network cards above 0",
        ),
    ],
    ids=IPV6_CASES,
)
def test_ipv6_mode_refuses_wrong_combinations_with_the_fix(env: dict[str, str], error: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    (message,) = [e for e in err.value.errors if "IPv" in e or "MTU" in e]
    assert message.startswith(error) or error in message, message


def test_security_groups_for_pods_are_offered_in_ipv6_mode_as_upstream_since_1_16() -> None:
    settings = load_settings({**IPV6, "ENABLE_POD_ENI": "true"})
    assert settings.enable_pod_eni and settings.enable_ipv6


def test_ipv6_egress_of_ipv4_clusters_is_a_setting_of_ipv4_mode() -> None:
    assert load_settings({"ENABLE_V6_EGRESS": "true"}).enable_v6_egress
