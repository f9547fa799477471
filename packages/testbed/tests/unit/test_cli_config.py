from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from vpccni.testbed.cli import load_config
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
