"""The allocator over several network cards (vpccni.ipamd.cardallocator) on per-card fakes, and on the real
per-card allocators and datastores."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.allocator import Allocator, NoAddressError
from vpccni.ipamd.cardallocator import CardAllocators
from vpccni.ipamd.checkpoint.file import FileCheckpointer
from vpccni.ipamd.cni.testing import FakeAllocator, two_cards
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.ipamd.pool.testing import IdlePool
from vpccni.ipamd.ports import EniRecord

POD = {"network": "aws-cni", "container_id": "c1", "ifname": "eth0", "pod_namespace": "ml", "pod_name": "w"}
KEY = {"network": "aws-cni", "container_id": "c1", "ifname": "eth0"}


def test_pods_with_one_interface_stay_on_card_0() -> None:
    cards, _, second = two_cards(count=1)
    got = cards.assign(**POD)
    assert (got.ip, got.network_card) == (IPv4Address("10.0.1.10"), 0)
    # Card 0 is empty now: a plain pod does not spill over to card 1's warm address (it waits on card 0).
    with pytest.raises(NoAddressError):
        cards.assign(**{**POD, "container_id": "c2"})
    assert second.free == 1


def test_one_address_per_card_in_card_order_with_interface_numbers() -> None:
    cards, first, second = two_cards()
    taken = cards.assign_each_card_pending(**POD, timeout_s=1.0, host_veths=["", "enixyz"])
    assert [(p.allocation.network_card, p.allocation.interface, p.allocation.route_table) for p in taken] == [
        (0, 0, 254),
        (1, 1, 10100),
    ]
    assert [a.metadata.interfaces_count for a in first.allocations() + second.allocations()] == [2, 2]
    assert second.allocations()[0].allocation.host_veth == "enixyz"
    assert cards.lookup_each_card(**KEY) == tuple(p.allocation for p in taken)
    listed = cards.allocations()
    assert [(e.allocation.network_card, e.interface_index) for e in listed] == [(0, 0), (1, 1)]


def test_a_card_without_an_address_gives_back_the_others_and_is_named() -> None:
    cards, first, second = two_cards(count=1)
    second.assign(**{**POD, "container_id": "other"})  # card 1's one address is taken
    second.exhausted_state = GrowthState.SUBNET_EXHAUSTED
    with pytest.raises(NoAddressError) as info:
        cards.assign_each_card_pending(**POD, timeout_s=0.0, host_veths=["", ""])
    assert "network card 1 (interface 1 of 2)" in str(info.value)
    assert info.value.retryable == PoolStatus(state=GrowthState.SUBNET_EXHAUSTED).retryable
    assert first.allocations() == () and first.free == 1
    assert [reason for _, reason in first.released] == ["SetupNSFailed"]


def test_release_and_lookup_cover_every_card() -> None:
    cards, first, second = two_cards()
    cards.assign_each_card_pending(**POD, timeout_s=1.0, host_veths=["", ""])
    assert cards.lookup(**KEY) is not None and cards.lookup(**KEY).network_card == 0  # type: ignore[union-attr]
    released = cards.release(**KEY)
    assert released is not None and released.network_card == 0
    assert first.allocations() == second.allocations() == ()
    assert cards.release(**KEY) is None  # DEL is idempotent


def test_readiness_is_card_0s_and_every_card_gets_ready() -> None:
    cards, first, second = two_cards()
    first.ready = second.ready = False
    assert cards.readiness()[0] is False
    cards.mark_ready()
    assert first.ready and second.ready and cards.readiness() == (True, "ready")


def test_card_0_is_required() -> None:
    with pytest.raises(ValueError, match="card 0"):
        CardAllocators({1: FakeAllocator([])})


def test_real_datastores_record_the_pod_in_each_cards_checkpoint(tmp_path: Path) -> None:
    clock = FakeClock()
    stores, allocators = {}, {}
    for card, primary, pod_ip in ((0, "10.0.1.4", "10.0.1.5/32"), (1, "10.0.2.4", "10.0.2.5/32")):
        path = tmp_path / ("ipam.json" if card == 0 else f"ipam-nic-{card}.json")
        store = DataStore(checkpointer=FileCheckpointer(path), clock=clock, network_card=card)
        store.add_eni(EniRecord(eni_id=f"eni-{card}", device_number=card, primary_ip=IPv4Address(primary)))
        store.add_cidrs(f"eni-{card}", [IPv4Network(pod_ip)], is_prefix=False)
        stores[card] = store
        allocators[card] = Allocator(datastore=store, pool=IdlePool(), clock=clock)
    cards = CardAllocators(allocators, clock=clock)
    cards.mark_ready()
    taken = cards.assign_each_card(**POD)
    assert [(a.network_card, a.route_table) for a in taken] == [(0, 254), (1, 10101)]
    for card, name in ((0, "ipam.json"), (1, "ipam-nic-1.json")):
        (entry,) = FileCheckpointer(tmp_path / name).read() or ()
        assert entry.metadata.interfaces_count == 2 and entry.ip == taken[card].ip
    # The next multi-NIC pod finds card 1 empty: the address it took on card 0 goes back.
    stores[0].add_cidrs("eni-0", [IPv4Network("10.0.1.6/32")], is_prefix=False)
    with pytest.raises(NoAddressError, match="network card 1"):
        cards.assign_each_card(**{**POD, "container_id": "c2"}, timeout_s=0.0)
    assert [a.key.container_id for a in stores[0].assigned()] == ["c1"]
