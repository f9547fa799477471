"""Network configuration decoding and validation."""

from __future__ import annotations

import json

import pytest
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import (
    DEFAULT_CNI_SOCKET,
    DEFAULT_DEL_QUEUE_DIR,
    clamp_mtu,
    decode,
    parse_netconf,
)

BASE = {"cniVersion": "0.4.0", "name": "aws-cni", "type": "aws-cni"}


def _error(raw: dict[str, object]) -> CNIError:
    with pytest.raises(CNIError) as info:
        parse_netconf(raw)
    return info.value


def test_upstream_conflist_entry_parses_with_upstream_defaults() -> None:
    conf = parse_netconf(
        {
            **BASE, "vethPrefix": "eni", "mtu": "9001", "podSGEnforcingMode": "strict",
            "pluginLogFile": "/var/log/aws-routed-eni/plugin.log", "pluginLogLevel": "DEBUG",
            "runtimeConfig": {
                "io.kubernetes.cri.pod-annotations": {"k8s.amazonaws.com/nicConfig": "multi-nic-attachment"},
                "portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}],
            },
            "somethingUnknown": {"kept": True},
        }
    )  # fmt: skip
    assert conf.name == "aws-cni"
    assert conf.cni_version == "0.4.0"
    assert (conf.veth_prefix, conf.mtu, conf.pod_sg_enforcing_mode) == ("eni", 9001, "strict")
    assert conf.plugin_log_level == "debug"
    assert conf.requires_multi_nic_attachment
    assert conf.port_mappings == [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]
    assert conf.raw["somethingUnknown"] == {"kept": True}
    assert (conf.cni_socket, conf.del_queue_dir) == (DEFAULT_CNI_SOCKET, DEFAULT_DEL_QUEUE_DIR)


def test_defaults_when_only_required_keys() -> None:
    conf = parse_netconf({"name": "net"})
    assert conf.cni_version == "0.2.0"
    assert (conf.veth_prefix, conf.mtu, conf.pod_sg_enforcing_mode, conf.plugin_log_file) == (
        "eni",
        9001,
        "strict",
        "",
    )
    assert conf.prev_result is None and conf.valid_attachments is None
    assert not conf.requires_multi_nic_attachment


@pytest.mark.parametrize(
    ("value", "mtu"),
    [("1500", 1500), (1500, 1500), ("576", 576), (9001, 9001), ("575", 9001), (9002, 9001), ("jumbo", 9001),
     ("", 9001), (None, 9001), ("-1500", 9001), ("99999999999999", 9001)],
)  # fmt: skip
def test_mtu_is_clamped_like_upstream(value: object, mtu: int) -> None:
    assert clamp_mtu(value) == mtu


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        ({"name": ""}, 7, "network name"),
        ({"name": "bad name"}, 7, "network name"),
        ({"name": 5}, 7, "name must be a string"),
        ({"cniVersion": "3.0.0"}, 1, "incompatible"),
        ({"cniVersion": 1.0}, 1, "invalid CNI version"),
        ({"cniVersions": "1.1.0"}, 7, "cniVersions"),
        ({"vethPrefix": "toolong"}, 7, "at most 4"),
        ({"vethPrefix": "eth"}, 7, "cannot be eth"),
        ({"vethPrefix": "vlan"}, 7, "cannot be eth"),
        ({"vethPrefix": "lo"}, 7, "cannot be eth"),
        ({"vethPrefix": "a/b"}, 7, "vethPrefix"),
        ({"mtu": [1500]}, 7, "mtu"),
        ({"mtu": True}, 7, "mtu"),
        ({"podSGEnforcingMode": "loose"}, 7, "strict or standard"),
        ({"pluginLogFile": "stdout"}, 7, "stdout"),
        ({"pluginLogFile": "relative.log"}, 7, "absolute"),
        ({"pluginLogLevel": "chatty"}, 7, "pluginLogLevel"),
        ({"runtimeConfig": []}, 7, "runtimeConfig"),
        ({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"a": 1}}}, 7, "pod-annotations"),
        ({"runtimeConfig": {"portMappings": {}}}, 7, "portMappings"),
        ({"prevResult": "x"}, 7, "prevResult"),
        ({"runtimeConfig": {"ips": ["10.0.0.9/32"]}}, 2, 'runtimeConfig.ips=["10.0.0.9/32"]'),
        ({"runtimeConfig": {"mac": "aa:bb:cc:dd:ee:ff"}}, 2, "runtimeConfig.mac"),
        ({"cniSocket": "relative.sock"}, 7, "cniSocket"),
        ({"delQueueDir": 3}, 7, "delQueueDir"),
        ({"cni.dev/valid-attachments": {}}, 7, "valid-attachments"),
        ({"cni.dev/valid-attachments": [{"containerID": "a"}]}, 7, "valid-attachments"),
        ({"pluginLogFile": "/x" * 3000}, 7, "pluginLogFile"),
    ],
)
def test_invalid_config_codes(extra: dict[str, object], code: int, words: str) -> None:
    err = _error({**BASE, **extra})
    assert err.code == code
    assert words in err.msg


def test_valid_attachments_are_parsed() -> None:
    conf = parse_netconf({**BASE, "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]})
    assert conf.valid_attachments == (("a", "eth0"),)


@pytest.mark.parametrize("data", [b"", b"{", b"nul", b"\xff\xfe", b"[1,2]", b'"str"', b"[" * 100000])
def test_undecodable_stdin_is_code_6(data: bytes) -> None:
    with pytest.raises(CNIError) as info:
        decode(data)
    assert info.value.code == ErrorCode.DECODING_FAILURE


def test_oversized_stdin_is_rejected() -> None:
    with pytest.raises(CNIError) as info:
        decode(json.dumps({**BASE, "pad": "x" * (1 << 20)}).encode())
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "larger than" in info.value.msg


@pytest.mark.parametrize("value", ["stderr", "STDERR", "StdErr"])
def test_stderr_in_any_case_is_the_log_on_stderr_not_a_file_of_that_name(value: str) -> None:
    assert parse_netconf({**BASE, "pluginLogFile": value}).plugin_log_file == "stderr"
