"""Which network cards ipamd manages and where their checkpoints live (vpccni.ipamd.cards)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from vpccni.ipamd.cards import candidate_cards, checkpoint_path, efa_fabric_cards
from vpccni.ipamd.ports import EniDescription


def eni(eni_id: str, card: int, interface_type: str = "interface") -> EniDescription:
    return EniDescription(
        eni_id=eni_id, mac="02:00:00:00:00:01", device_number=0, network_card=card,
        primary_ip=IPv4Address("10.0.0.5"), interface_type=interface_type,
    )  # fmt: skip


def test_candidates_are_card_0_alone_or_every_card_of_the_type() -> None:
    assert candidate_cards((0, 1, 2, 3), multi_nic=False) == (0,)
    assert candidate_cards((3, 1, 0, 2), multi_nic=True) == (0, 1, 2, 3)
    assert candidate_cards((), multi_nic=True) == (0,)  # an unknown type: node init reports it


def test_a_card_with_an_efa_only_eni_and_nothing_managed_belongs_to_efa() -> None:
    enis = [
        eni("a", 1, "efa-only"),
        eni("b", 2, "efa-only"),
        eni("c", 2),
        eni("d", 3),
        eni("e", 0, "efa-only"),
    ]
    assert efa_fabric_cards(enis, managed_eni_ids={"c", "d"}) == {1}
    assert efa_fabric_cards(enis, managed_eni_ids={"d"}) == {1, 2}  # "c" is unmanaged (no_manage tag)


@pytest.mark.parametrize(
    ("store", "card", "path"),
    [
        ("/var/run/aws-node/ipam.json", 0, "/var/run/aws-node/ipam.json"),
        ("/var/run/aws-node/ipam.json", 1, "/var/run/aws-node/ipam-nic-1.json"),
        ("/var/run/aws-node/ipam.json", 31, "/var/run/aws-node/ipam-nic-31.json"),
        ("/data/state", 2, "/data/state-nic-2.json"),
    ],
)
def test_checkpoint_paths_are_upstreams(store: str, card: int, path: str) -> None:
    assert checkpoint_path(store, card) == path
