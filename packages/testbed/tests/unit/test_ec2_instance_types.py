from __future__ import annotations

import pytest
from vpccni.testbed.ec2.instance_types import UnknownInstanceTypeError, limits_for


@pytest.mark.parametrize(
    ("itype", "enis", "ips"),
    [("m5.large", 3, 10), ("t3.small", 3, 4), ("m5.xlarge", 4, 15), ("c5.4xlarge", 8, 30), ("t3.nano", 2, 2)],
)
def test_limits_match_ec2_describe_instance_types(itype: str, enis: int, ips: int) -> None:
    limits = limits_for(itype)
    assert (limits.max_enis, limits.ipv4_per_eni) == (enis, ips)
    assert limits.enis_per_card[limits.default_network_card] == enis


def test_prefix_delegation_only_on_nitro_or_metal() -> None:
    assert limits_for("m5.large").supports_prefix_delegation
    assert not limits_for("m4.large").supports_prefix_delegation
    assert limits_for("a1.metal").supports_prefix_delegation


def test_unknown_type_names_a_valid_one() -> None:
    with pytest.raises(UnknownInstanceTypeError, match=r"m5\.large"):
        limits_for("m99.huge")
