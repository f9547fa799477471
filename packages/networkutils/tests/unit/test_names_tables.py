from __future__ import annotations

import hashlib

import pytest
from vpccni.networkutils.names import host_veth_name, random_local_mac, unique_local_mac
from vpccni.networkutils.tables import route_table_for_eni


def test_veth_name_is_prefix_plus_sha1_of_namespace_dot_pod() -> None:
    expected = "eni" + hashlib.sha1(b"default.nginx").hexdigest()[:11]
    assert host_veth_name("default", "nginx") == expected
    assert len(expected) == 14  # fits IFNAMSIZ (15)


def test_veth_name_for_extra_interface_uses_pod_dot_index() -> None:
    expected = "eni" + hashlib.sha1(b"default.nginx.2").hexdigest()[:11]
    assert host_veth_name("default", "nginx", index=2) == expected


def test_veth_name_custom_prefix() -> None:
    assert host_veth_name("kube-system", "dns", prefix="vlan").startswith("vlan")
    assert host_veth_name("kube-system", "dns", prefix="vlan")[4:] == host_veth_name("kube-system", "dns")[3:]


@pytest.mark.parametrize("prefix", ["", "toolong"])
def test_veth_prefix_must_be_one_to_four_chars(prefix: str) -> None:
    with pytest.raises(ValueError, match="AWS_VPC_K8S_CNI_VETHPREFIX"):
        host_veth_name("default", "nginx", prefix=prefix)


def test_random_mac_is_locally_administered_unicast() -> None:
    mac = random_local_mac(lambda n: b"\xff" * n)
    assert mac == "fe:ff:ff:ff:ff:ff"
    first = int(random_local_mac().split(":")[0], 16)
    assert first & 0x02 and not first & 0x01


def test_unique_mac_avoids_taken_ones_and_gives_up() -> None:
    draws = iter([b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"])
    assert unique_local_mac(["02:00:00:00:00:01"], randbytes=lambda n: next(draws)) == "02:00:00:00:00:02"
    with pytest.raises(RuntimeError, match="no unique MAC"):
        unique_local_mac(["02:00:00:00:00:01"], attempts=3, randbytes=lambda n: b"\x02\x00\x00\x00\x00\x01")


@pytest.mark.parametrize(
    ("device", "card", "table"),
    [(0, 0, 254), (1, 0, 2), (2, 0, 3), (14, 0, 15), (0, 1, 10100), (1, 1, 10101), (3, 2, 10203)],
)
def test_route_table_numbering(device: int, card: int, table: int) -> None:
    assert route_table_for_eni(device, card) == table


def test_route_table_rejects_negative() -> None:
    with pytest.raises(ValueError):
        route_table_for_eni(-1, 0)
