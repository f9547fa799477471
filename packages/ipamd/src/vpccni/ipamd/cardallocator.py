"""The allocator over every managed network card (`cards.py`): what the CNI endpoint and gRPC backend call.

A pod without the multi-NIC annotation is served by card 0's allocator exactly as on a node without
multi-NIC. Upstream's AddNetwork also gives such a pod an address of another card when card 0 has none; here
it does not: card 0's ADD waits while its pool grows (decisions.md), and cards above 0 keep only one warm
address each (upstream's WARM_IP_TARGET=1), which belongs to the next multi-NIC pod.

A multi-NIC pod takes one address from every card, in card order, under its one CNI key (each card's
datastore and checkpoint file record it, upstream's layout). When a card cannot give one, the addresses
already taken go back and the ADD fails naming the card. Lookups and releases go to every card, so a DEL
by any path releases all of a pod's addresses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.ipamd.allocator import Allocation, NoAddressError, PendingAllocation, PodAllocation
from vpccni.ipamd.podkey import IPAMKey

log = logging.getLogger(__name__)


class CardAllocator(Protocol):
    """One card's allocator (`vpccni.ipamd.allocator.Allocator`)."""

    def assign_pending(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None, interfaces_count: int = 1, host_veth: str = "",
    ) -> PendingAllocation: ...  # fmt: skip

    def assign(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None, interfaces_count: int = 1, host_veth: str = "",
    ) -> Allocation: ...  # fmt: skip

    def release(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str = "", pod_name: str = "",
        reason: str = "PodDeleted",
    ) -> Allocation | None: ...  # fmt: skip

    def lookup(self, *, network: str, container_id: str, ifname: str) -> Allocation | None: ...

    def allocations(self) -> tuple[PodAllocation, ...]: ...

    def readiness(self) -> tuple[bool, str]: ...

    def mark_ready(self) -> None: ...


class CardAllocators:
    """`PodAddressAllocator` and `MultiNicAllocator` (vpccni.ipamd.cni.ports) over one allocator per card."""

    def __init__(self, allocators: Mapping[int, CardAllocator], *, clock: Clock | None = None) -> None:
        if 0 not in allocators:
            raise ValueError("network card 0 always has an allocator")
        self._cards = tuple(sorted(allocators))
        self._by_card = dict(allocators)
        self._first = allocators[0]
        self._clock: Clock = clock or SystemClock()

    @property
    def cards(self) -> tuple[int, ...]:
        """The managed cards, ascending: a multi-NIC pod gets one interface on each."""
        return self._cards

    def mark_ready(self) -> None:
        for card in self._cards:
            self._by_card[card].mark_ready()

    # --- pods with one interface: card 0 -----------------------------------------------------------------

    def assign(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None, host_veth: str = "",
    ) -> Allocation:  # fmt: skip
        return self._first.assign(
            network=network, container_id=container_id, ifname=ifname, pod_namespace=pod_namespace,
            pod_name=pod_name, timeout_s=timeout_s, host_veth=host_veth,
        )  # fmt: skip

    def assign_pending(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None, host_veth: str = "",
    ) -> PendingAllocation:  # fmt: skip
        return self._first.assign_pending(
            network=network, container_id=container_id, ifname=ifname, pod_namespace=pod_namespace,
            pod_name=pod_name, timeout_s=timeout_s, host_veth=host_veth,
        )  # fmt: skip

    def readiness(self) -> tuple[bool, str]:
        return self._first.readiness()

    # --- every card ---------------------------------------------------------------------------------------

    def release(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str = "", pod_name: str = "",
        reason: str = "PodDeleted",
    ) -> Allocation | None:  # fmt: skip
        """Every card's address of the key (DEL is idempotent); returns the first card's."""
        first: Allocation | None = None
        for card in self._cards:
            released = self._by_card[card].release(
                network=network, container_id=container_id, ifname=ifname, pod_namespace=pod_namespace,
                pod_name=pod_name, reason=reason,
            )  # fmt: skip
            first = first or released
        return first

    def lookup(self, *, network: str, container_id: str, ifname: str) -> Allocation | None:
        found = self.lookup_each_card(network=network, container_id=container_id, ifname=ifname)
        return found[0] if found else None

    def lookup_each_card(self, *, network: str, container_id: str, ifname: str) -> tuple[Allocation, ...]:
        """The key's addresses in card order, each with its interface number."""
        found = (
            self._by_card[card].lookup(network=network, container_id=container_id, ifname=ifname)
            for card in self._cards
        )
        return tuple(replace(a, interface=i) for i, a in enumerate(a for a in found if a is not None))

    def allocations(self) -> tuple[PodAllocation, ...]:
        interfaces: dict[IPAMKey, int] = {}
        out = []
        for card in self._cards:
            for entry in self._by_card[card].allocations():
                number = interfaces.get(entry.key, 0)
                interfaces[entry.key] = number + 1
                out.append(replace(entry, allocation=replace(entry.allocation, interface=number)))
        return tuple(out)

    def assign_each_card_pending(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None, host_veths: Sequence[str],
    ) -> tuple[PendingAllocation, ...]:  # fmt: skip
        """One address per card (card order), the checkpoint writes still running; `host_veths[i]` is the
        name recorded for interface i ("" for upstream's). All or nothing: when a card has no address (after
        waiting up to `timeout_s` in all; None: each card's default) the others go back and NoAddressError
        names the card."""
        if len(host_veths) != len(self._cards):
            raise ValueError(f"{len(host_veths)} host veth names for {len(self._cards)} network cards")
        deadline = None if timeout_s is None else self._clock.monotonic() + timeout_s
        taken: list[tuple[int, PendingAllocation]] = []
        for number, card in enumerate(self._cards):
            try:
                pending = self._by_card[card].assign_pending(
                    network=network, container_id=container_id, ifname=ifname, pod_namespace=pod_namespace,
                    pod_name=pod_name, timeout_s=self._left(deadline),
                    interfaces_count=len(self._cards), host_veth=host_veths[number],
                )  # fmt: skip
            except NoAddressError as exc:
                self._give_back(taken, network=network, container_id=container_id, ifname=ifname)
                raise NoAddressError(
                    f"network card {card} (interface {number} of {len(self._cards)}): {exc}",
                    status=exc.status,
                    retryable=exc.retryable,
                ) from None
            except Exception:
                self._give_back(taken, network=network, container_id=container_id, ifname=ifname)
                raise
            allocation = replace(pending.allocation, network_card=card, interface=number)
            taken.append((card, PendingAllocation(allocation=allocation, written=pending.written)))
        return tuple(pending for _, pending in taken)

    def assign_each_card(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None,
    ) -> tuple[Allocation, ...]:  # fmt: skip
        """`assign_each_card_pending`, returning once every card's checkpoint has it (the gRPC backend)."""
        taken = self.assign_each_card_pending(
            network=network, container_id=container_id, ifname=ifname, pod_namespace=pod_namespace,
            pod_name=pod_name, timeout_s=timeout_s, host_veths=[""] * len(self._cards),
        )  # fmt: skip
        try:
            for pending in taken:
                pending.wait_written()
        except Exception:
            self._give_back(
                [(p.allocation.network_card, p) for p in taken],
                network=network, container_id=container_id, ifname=ifname,
            )  # fmt: skip
            raise
        return tuple(p.allocation for p in taken)

    def _left(self, deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - self._clock.monotonic())

    def _give_back(
        self, taken: Sequence[tuple[int, PendingAllocation]], *, network: str, container_id: str, ifname: str
    ) -> None:
        """Release what a failed multi-NIC assignment took, each after its own checkpoint write."""
        for card, pending in taken:
            try:
                pending.wait_written()
            except Exception:
                continue  # the write failed: that card already took its address back
            self._by_card[card].release(
                network=network, container_id=container_id, ifname=ifname, reason="SetupNSFailed"
            )
            log.info("gave back %s of card %d: the pod's ADD failed", pending.allocation.ip, card)
