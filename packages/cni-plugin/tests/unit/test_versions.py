"""Spec version parsing, negotiation and what each version allows."""

from __future__ import annotations

import pytest
from vpccni.cniplugin import versions
from vpccni.cniplugin.errors import CNIError, ErrorCode


@pytest.mark.parametrize(
    ("cni_version", "cni_versions", "chosen"),
    [
        ("1.0.0", None, "1.0.0"),
        (None, None, "0.2.0"),
        ("0.4.0", ["1.0.0", "1.1.0"], "1.1.0"),
        ("1.0.0", ["2.0.0", "0.3.1"], "1.0.0"),
        ("0.3", None, "0.3.0"),
        ("9.9.9", ["0.4.0"], "0.4.0"),
    ],
)
def test_negotiation_picks_the_highest_supported(cni_version, cni_versions, chosen) -> None:
    assert versions.negotiate(cni_version, cni_versions) == chosen


@pytest.mark.parametrize("bad", ["2.0.0", "0.0.1"])
def test_unsupported_version_is_code_1(bad: str) -> None:
    with pytest.raises(CNIError) as info:
        versions.negotiate(bad, None)
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION
    assert "1.1.0" in info.value.msg


@pytest.mark.parametrize("bad", ["", "one", "1.x.0", "1.0.0.0", 1, "\u0661.\u0660.\u0660", "1" * 40])
def test_malformed_version_is_code_1(bad: object) -> None:
    with pytest.raises(CNIError) as info:
        versions.parse_version(bad)
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION


def test_cni_versions_must_be_a_list() -> None:
    with pytest.raises(CNIError) as info:
        versions.negotiate("1.0.0", "1.1.0")
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_predicates_follow_the_spec() -> None:
    assert [v for v in versions.SUPPORTED_VERSIONS if versions.has_ip_version(v)] == [
        "0.3.0",
        "0.3.1",
        "0.4.0",
    ]
    assert [v for v in versions.SUPPORTED_VERSIONS if versions.allows_check(v)] == ["0.4.0", "1.0.0", "1.1.0"]
    assert [v for v in versions.SUPPORTED_VERSIONS if versions.allows_status_and_gc(v)] == ["1.1.0"]
