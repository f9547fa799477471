"""Results written per spec version, and read back from any version."""

from __future__ import annotations

import pytest
from vpccni.cniplugin import results, versions
from vpccni.cniplugin.errors import CNIError, ErrorCode

CURRENT = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "eni0123456789a", "mac": "aa:bb:cc:dd:ee:ff"},
        {"name": "eth0", "sandbox": "/var/run/netns/p", "mac": "2", "mtu": 9001},
        {"name": "dummy0123456789a", "mac": "0", "sandbox": "1"},
    ],
    "ips": [{"address": "10.0.1.23/32", "interface": 1}, {"address": "2001:db8::5/128", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "table": 5}, {"dst": "::/0", "gw": "fe80::1"}],
    "dns": {},
}


def test_1_1_0_is_unchanged() -> None:
    assert results.convert(CURRENT, "1.1.0") == CURRENT


def test_1_0_0_drops_the_1_1_keys_and_has_no_ip_version() -> None:
    out = results.convert(CURRENT, "1.0.0")
    assert out["cniVersion"] == "1.0.0"
    assert "mtu" not in out["interfaces"][1]
    assert "table" not in out["routes"][0]
    assert all("version" not in ip for ip in out["ips"])
    assert out["interfaces"][1]["mac"] == "2"


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_0_3_and_0_4_add_ip_version(version: str) -> None:
    out = results.convert(CURRENT, version)
    assert out["cniVersion"] == version
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert [ip["interface"] for ip in out["ips"]] == [1, 1]
    assert out["dns"] == {}


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_versions_use_ip4_and_ip6(version: str) -> None:
    out = results.convert(CURRENT, version)
    assert out == {
        "cniVersion": version,
        "ip4": {"ip": "10.0.1.23/32", "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]},
        "ip6": {"ip": "2001:db8::5/128", "routes": [{"dst": "::/0", "gw": "fe80::1"}]},
        "dns": {},
    }


def test_legacy_needs_an_address() -> None:
    with pytest.raises(CNIError) as info:
        results.convert({"cniVersion": "1.1.0", "ips": []}, "0.2.0")
    assert info.value.code == ErrorCode.INTERNAL


def test_convert_does_not_mutate_its_input() -> None:
    before = repr(CURRENT)
    for version in versions.SUPPORTED_VERSIONS:
        results.convert(CURRENT, version)
    assert repr(CURRENT) == before


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
def test_round_trip_through_every_rich_version(version: str) -> None:
    back = results.to_current(results.convert(CURRENT, version), version)
    assert back["ips"] == CURRENT["ips"]
    assert [i["name"] for i in back["interfaces"]] == [i["name"] for i in CURRENT["interfaces"]]


def test_legacy_prev_result_reads_back() -> None:
    back = results.to_current(results.convert(CURRENT, "0.2.0"), "0.2.0")
    assert [ip["address"] for ip in back["ips"]] == ["10.0.1.23/32", "2001:db8::5/128"]


@pytest.mark.parametrize(
    "bad", [{"ips": "x"}, {"ips": [{"address": 5}]}, {"interfaces": {}}, {"ips": ["10.0.0.1"]}]
)
def test_malformed_prev_result_is_code_6(bad: dict[str, object]) -> None:
    with pytest.raises(CNIError) as info:
        results.to_current(bad, "0.4.0")
    assert info.value.code == ErrorCode.DECODING_FAILURE
