from __future__ import annotations

import gzip
import json
import runpy
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from vpccni.awsutils.errors import Ec2Error, UnknownInstanceTypeError
from vpccni.awsutils.limits import (
    InstanceLimits,
    LimitsCatalog,
    known_instance_types,
    max_pods,
    recommended_max_pods,
    static_limits,
)

ROOT = Path(__file__).resolve().parents[4]


def _limits(t: str) -> InstanceLimits:
    found = static_limits(t)
    assert found is not None, t
    return found


def test_m5_large_limits_and_max_pods_match_upstream() -> None:
    m5 = _limits("m5.large")
    assert (m5.max_enis, m5.ipv4_per_eni, m5.vcpus, m5.hypervisor) == (3, 10, 2, "nitro")
    assert dict(m5.network_cards) == {0: 3}
    assert m5.supports_prefix_delegation
    assert max_pods(m5) == 29
    assert max_pods(m5, custom_networking=True) == 20
    assert max_pods(m5, prefix_delegation=True) == 434
    assert recommended_max_pods(m5, prefix_delegation=True) == 110


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("t3.nano", 4),
        ("t3.small", 11),
        ("t3.medium", 17),
        ("m5.xlarge", 58),
        ("c5.4xlarge", 234),
        ("p3dn.24xlarge", 737),
        ("m5.24xlarge", 737),
        ("c5.large", 29),
    ],
)
def test_eni_max_pods_file_values(instance_type: str, expected: int) -> None:
    assert max_pods(_limits(instance_type)) == expected


def test_recommended_cap_is_250_above_30_vcpus() -> None:
    big = _limits("m5.24xlarge")
    assert big.vcpus == 96
    assert recommended_max_pods(big, prefix_delegation=True) == 250
    assert recommended_max_pods(_limits("t3.nano")) == 4  # under the cap: unchanged


def test_multi_card_and_bare_metal_types() -> None:
    p5 = _limits("p5.48xlarge")
    assert len(p5.network_cards) == 32 and p5.max_enis_on_card(31) == 2 and p5.max_enis_on_card(32) == 0
    metal = _limits("m5.metal")
    assert metal.bare_metal and metal.hypervisor == "" and metal.supports_prefix_delegation
    xen = next(_limits(t) for t in known_instance_types() if _limits(t).hypervisor == "xen")
    assert not xen.supports_prefix_delegation


def test_table_covers_every_instance_type_moto_ships() -> None:
    raw = resources.files("moto.ec2").joinpath("resources/instance_types.json.gz").read_bytes()
    moto_types: dict[str, Any] = json.loads(gzip.decompress(raw))
    assert set(known_instance_types()) == set(moto_types)
    for name in ("m5.large", "t3.nano", "p5.48xlarge"):
        assert _limits(name) == InstanceLimits.from_describe(moto_types[name])


def test_generated_table_is_fresh() -> None:
    gen = runpy.run_path(str(ROOT / "scripts" / "gen_limits.py"))
    assert gen["main"](["--check"]) == 0


class CountingSource:
    def __init__(self, records: dict[str, dict[str, Any]], fail: bool = False) -> None:
        self.records = records
        self.calls: list[str] = []
        self.fail = fail

    def describe_instance_type(self, instance_type: str) -> dict[str, Any] | None:
        self.calls.append(instance_type)
        if self.fail:
            raise Ec2Error("denied", api="DescribeInstanceTypes", code="UnauthorizedOperation")
        return self.records.get(instance_type)


FUTURE = {
    "InstanceType": "z9.large",
    "Hypervisor": "nitro",
    "BareMetal": False,
    "VCpuInfo": {"DefaultVCpus": 4},
    "NetworkInfo": {
        "MaximumNetworkInterfaces": 4,
        "Ipv4AddressesPerInterface": 15,
        "DefaultNetworkCardIndex": 0,
        "NetworkCards": [{"NetworkCardIndex": 0, "MaximumNetworkInterfaces": 4}],
    },
}


def test_unknown_type_falls_back_to_describe_instance_types_once() -> None:
    source = CountingSource({"z9.large": FUTURE})
    catalog = LimitsCatalog(source)
    assert catalog.get("m5.large").max_enis == 3 and source.calls == []  # static table: no call
    first = catalog.get("z9.large")
    second = catalog.get("z9.large")
    assert first == second and first.max_enis == 4 and max_pods(first) == 58
    assert source.calls == ["z9.large"]


def test_unknown_everywhere_is_an_actionable_error() -> None:
    with pytest.raises(UnknownInstanceTypeError, match="ec2:DescribeInstanceTypes"):
        LimitsCatalog(CountingSource({})).get("z9.nope")
    with pytest.raises(UnknownInstanceTypeError, match=r"unknown instance type 'z9\.nope'"):
        LimitsCatalog(CountingSource({}, fail=True)).get("z9.nope")
    with pytest.raises(UnknownInstanceTypeError):
        LimitsCatalog().get("z9.nope")
