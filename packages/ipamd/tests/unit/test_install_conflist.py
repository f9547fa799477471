"""Golden tests of 10-aws.conflist for default settings and each option."""

from __future__ import annotations

import json

import pytest
from vpccni.cniplugin.netconf import decode
from vpccni.ipamd.install.conflist import ConflistOptions, conflist_bytes, render_conflist
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import load_settings

GOLDEN_DEFAULT = """\
{
  "cniVersion": "0.4.0",
  "name": "aws-cni",
  "disableCheck": true,
  "plugins": [
    {
      "name": "aws-cni",
      "type": "aws-cni",
      "vethPrefix": "eni",
      "mtu": "9001",
      "podSGEnforcingMode": "strict",
      "pluginLogFile": "/var/log/aws-routed-eni/plugin.log",
      "pluginLogLevel": "DEBUG",
      "capabilities": {
        "io.kubernetes.cri.pod-annotations": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      },
      "snat": true
    }
  ]
}
"""


def _options(env: dict[str, str]) -> ConflistOptions:
    return WiringPlan.from_settings(load_settings(env)).install.conflist


def _render(env: dict[str, str]) -> dict[str, object]:
    return json.loads(conflist_bytes(_options(env)))


def test_default_settings_give_upstreams_conflist_byte_for_byte() -> None:
    assert conflist_bytes(_options({})).decode() == GOLDEN_DEFAULT


def test_the_shim_parses_the_default_conflist_plugin_entry() -> None:
    conf = render_conflist(_options({}))
    entry = dict(conf["plugins"][0], cniVersion=conf["cniVersion"])  # type: ignore[index]
    assert decode(json.dumps(entry).encode())["mtu"] == "9001"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AWS_VPC_K8S_CNI_VETHPREFIX": "abc"}, {"vethPrefix": "abc"}),
        ({"AWS_VPC_ENI_MTU": "1500"}, {"mtu": "1500"}),
        ({"AWS_VPC_ENI_MTU": "1500", "POD_MTU": "1400"}, {"mtu": "1400"}),
        ({"POD_SECURITY_GROUP_ENFORCING_MODE": "standard"}, {"podSGEnforcingMode": "standard"}),
        ({"AWS_VPC_K8S_PLUGIN_LOG_FILE": "stderr"}, {"pluginLogFile": "stderr"}),
        ({"AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "info"}, {"pluginLogLevel": "INFO"}),
        (
            {"VPCCNI_RUN_DIR": "/run/vpccni"},
            {"cniSocket": "/run/vpccni/cni.sock", "delQueueDir": "/run/vpccni/del-queue"},
        ),
    ],
)
def test_each_aws_cni_option_changes_only_its_field(env: dict[str, str], expected: dict[str, str]) -> None:
    default = _render({})
    changed = _render(env)
    want = dict(default["plugins"][0], **expected)  # type: ignore[index]
    assert changed["plugins"][0] == want  # type: ignore[index]
    assert changed["plugins"][1:] == default["plugins"][1:]  # type: ignore[index]


def test_bandwidth_plugin_is_chained_after_portmap() -> None:
    plugins = _render({"ENABLE_BANDWIDTH_PLUGIN": "true"})["plugins"]
    assert [p["type"] for p in plugins] == ["aws-cni", "portmap", "bandwidth"]  # type: ignore[union-attr,index]
    assert plugins[2] == {"type": "bandwidth", "capabilities": {"bandwidth": True}}  # type: ignore[index]


def test_disable_pod_v6_chains_tuning_last() -> None:
    plugins = _render({"DISABLE_POD_V6": "true", "ENABLE_BANDWIDTH_PLUGIN": "true"})["plugins"]
    assert [p["type"] for p in plugins] == ["aws-cni", "portmap", "bandwidth", "tuning"]  # type: ignore[union-attr,index]
    assert plugins[3] == {  # type: ignore[index]
        "type": "tuning",
        "sysctl": {
            "net.ipv6.conf.all.disable_ipv6": "1",
            "net.ipv6.conf.default.disable_ipv6": "1",
            "net.ipv6.conf.lo.disable_ipv6": "1",
        },
    }
