"""Network cards (ENABLE_MULTI_NIC): which cards ipamd manages and where each card's checkpoint lives.

Card 0 is always managed, and behaves exactly as it does without multi-NIC. With ENABLE_MULTI_NIC=true every
other card of the instance type is managed too, each with its own datastore, checkpoint file, reconciler, pool
manager and allocator (upstream: one datastore per managed card), except a card that holds an EFA-only ENI
and no ENI ipamd manages: EFA-only interfaces have no IPv4 address, so such a card belongs to the EFA fabric
and is left alone, as upstream leaves it (`markUnmanagedNetworkCards`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from vpccni.ipamd.ownership import EFA_ONLY
from vpccni.ipamd.ports import EniDescription

DEFAULT_CARD = 0


def candidate_cards(instance_cards: Iterable[int], *, multi_nic: bool) -> tuple[int, ...]:
    """The cards ipamd may manage, ascending: card 0 alone, or every card of the instance type."""
    if not multi_nic:
        return (DEFAULT_CARD,)
    return tuple(sorted({DEFAULT_CARD, *instance_cards}))


def efa_fabric_cards(enis: Iterable[EniDescription], managed_eni_ids: Collection[str]) -> frozenset[int]:
    """Cards above 0 holding an EFA-only ENI and no ENI ipamd manages: not for pods."""
    with_efa_only = {e.network_card for e in enis if e.interface_type == EFA_ONLY}
    serving = {e.network_card for e in enis if e.eni_id in managed_eni_ids}
    return frozenset(c for c in with_efa_only - serving if c != DEFAULT_CARD)


def checkpoint_path(backing_store: str, card: int) -> str:
    """Card 0's is AWS_VPC_K8S_CNI_BACKING_STORE itself; card N's is upstream's `<store>-nic-N.json`
    (`/var/run/aws-node/ipam-nic-1.json`), so either implementation reads the other's after a rollout."""
    if card == DEFAULT_CARD:
        return backing_store
    base = backing_store[: -len(".json")] if backing_store.endswith(".json") else backing_store
    return f"{base}-nic-{card}.json"
