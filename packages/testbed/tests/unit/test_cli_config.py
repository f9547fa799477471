from __future__ import annotations

import json
import os
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from vpccni.testbed.cli import build_parser, load_config, up, up_options
from vpccni.testbed.cli_up import TestbedUp, UpOptions
from vpccni.testbed.cloud import CNI_ROLE_TAG, CloudConfig
from vpccni.testbed.ec2.addresses import Placement
from vpccni.testbed.ec2.throttle import MUTATING
from vpccni.testbed.imds.server import Outage


def test_defaults_have_a_primary_and_a_discoverable_subnet() -> None:
    cfg = CloudConfig()
    assert cfg.vpc_cidr == IPv4Network("10.0.0.0/16")
    assert len(cfg.subnets) >= 2 and cfg.subnets[1].tags[CNI_ROLE_TAG] == "1"
    assert all(s.cidr.subnet_of(cfg.vpc_cidr) for s in cfg.subnets)
    assert cfg.zone == "us-west-2a"


def test_config_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "testbed.json"
    path.write_text(
        json.dumps(
            {
                "region": "eu-west-1",
                "instance_type": "t3.small",
                "address_placement": "random",
                "subnets": [{"cidr": "10.0.0.0/24"}],
                "throttle": {MUTATING: {"capacity": 3, "refill_per_s": 1}},
                "imds_outage_mode": "http503",
                "latency": {"AttachNetworkInterface": 0.5},
                "errors": {"CreateNetworkInterface": ["InsufficientFreeAddressesInSubnet", 2]},
            }
        )
    )
    cfg, node = load_config(path)
    assert cfg.region == "eu-west-1" and node == {"instance_type": "t3.small"}
    assert cfg.address_placement is Placement.RANDOM and cfg.imds_outage_mode is Outage.HTTP_503
    assert cfg.subnets[0].cidr == IPv4Network("10.0.0.0/24")
    assert cfg.throttle[MUTATING].capacity == 3
    assert cfg.latency == {"AttachNetworkInterface": 0.5}
    assert cfg.errors == {"CreateNetworkInterface": ("InsufficientFreeAddressesInSubnet", 2)}


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"regoin": "x"}))
    with pytest.raises(SystemExit, match="regoin"):
        load_config(path)


def test_up_flags_win_over_the_config_files_node_keys() -> None:
    args = build_parser().parse_args(["up", "--nodes", "3", "--instance-type", "c5.xlarge", "--no-datapath"])
    options = up_options(args, {"instance_type": "t3.small", "imds_port": "8111"})
    assert options == UpOptions(instance_type="c5.xlarge", nodes=3, datapath=False, imds_port=8111)
    defaults = up_options(build_parser().parse_args(["up"]), {"instance_type": "t3.small"})
    assert defaults == UpOptions(instance_type="t3.small", nodes=1, datapath=True, imds_port=0)


@pytest.mark.parametrize("nodes", ["0", "-2", "two"])
def test_up_needs_at_least_one_node(nodes: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--nodes", nodes])
    assert "--nodes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 1"):
        TestbedUp(cloud_config=CloudConfig(), options=UpOptions(nodes=0))


def test_up_with_the_datapath_asks_a_non_root_user_for_root_or_no_datapath(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit, match="--no-datapath"):
        up(build_parser().parse_args(["up", "--nodes", "2"]))
