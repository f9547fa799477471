"""One node's network cards as the daemon runs them: per card a datastore with its own checkpoint file, a
reconciler, a pool manager and an allocator. Card 0 always; with ENABLE_MULTI_NIC every card node init
manages (`cards.py`). The pieces are the single-card ones, each already built for one card.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from vpccni.ipamd.adapters.restore import HostCheckpointRestore
from vpccni.ipamd.allocator import Allocator
from vpccni.ipamd.cards import DEFAULT_CARD
from vpccni.ipamd.checkpoint.file import Checkpointer
from vpccni.ipamd.datastore.model import AssignedAddress
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.introspection import pool_view
from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.ipamd.nodeinit import InitOptions
from vpccni.ipamd.pool.manager import PoolManager
from vpccni.ipamd.reconcile import Reconciler
from vpccni.networkutils.netlink import Netlink


@dataclass(kw_only=True, eq=False)
class CardStack:
    card: int
    datastore: DataStore
    checkpointer: Checkpointer
    reconciler: Reconciler
    pool: PoolManager | None = None  # made for node init's pre-scale
    allocator: Allocator | None = None  # made when ipamd starts serving


class NodeCards:
    """The stacks, ascending by card; card 0 first."""

    def __init__(self, stacks: Iterable[CardStack]) -> None:
        self._stacks = {s.card: s for s in sorted(stacks, key=lambda s: s.card)}
        if DEFAULT_CARD not in self._stacks:
            raise ValueError("network card 0 always has a stack")

    def __iter__(self) -> Iterator[CardStack]:
        return iter(self._stacks.values())

    def __len__(self) -> int:
        return len(self._stacks)

    def __getitem__(self, card: int) -> CardStack:
        return self._stacks[card]

    @property
    def first(self) -> CardStack:
        return self._stacks[DEFAULT_CARD]

    def keep(self, cards: Iterable[int]) -> None:
        """Drop the stacks of cards node init left alone (an EFA fabric's)."""
        wanted = {DEFAULT_CARD, *cards}
        self._stacks = {c: s for c, s in self._stacks.items() if c in wanted}

    def assigned(self) -> tuple[AssignedAddress, ...]:
        return tuple(a for s in self for a in s.datastore.assigned())

    def pool_cidrs(self) -> tuple[IPv4Network, ...]:
        """Every IPv4 secondary address and prefix of ipamd's ENIs, every card's (pod rules are IPv4's)."""
        cidrs = (c.cidr for s in self for e in s.datastore.snapshot().enis for c in e.cidrs)
        return tuple(c for c in cidrs if isinstance(c, IPv4Network))

    def eni_infos(self) -> dict[int, Any]:
        """Upstream's `/v1/enis` value: ENIInfos per card."""
        return {s.card: s.datastore.eni_infos() for s in self}

    def pool_views(self, *, targets: InitOptions) -> dict[str, Any]:
        """`/v1/pool`: card 0's pool, and with multi-NIC every other card's under `networkCards`."""
        views = {
            s.card: pool_view(snapshot=s.datastore.snapshot(), status=s.pool.status, targets=targets)
            for s in self
            if s.pool is not None
        }
        first = views.pop(DEFAULT_CARD)
        if views:
            first["networkCards"] = {str(card): view for card, view in views.items()}
        return first

    def update_gauges(self, metrics: IpamdMetrics) -> None:
        """The pool gauges, every card's (the metrics sum them)."""
        for s in self:
            metrics.update_pool(s.datastore.snapshot(), network_card=s.card)

    def restores(self, netlink: Netlink) -> dict[int, HostCheckpointRestore]:
        """Node init's checkpoint restore of each card."""
        return {
            s.card: HostCheckpointRestore(datastore=s.datastore, checkpointer=s.checkpointer, netlink=netlink)
            for s in self
        }
