"""The two seams the CNI endpoint needs: addresses (ipamd's allocator) and pod wiring (networkutils).

``vpccni.ipamd.allocator.Allocator`` and ``vpccni.networkutils.pod.PodWiring`` implement them; the
stateful fakes in ``vpccni.ipamd.cni.testing`` stand in for them in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from vpccni.ipamd.allocator import Allocation, NoAddressError, NotReady, PendingAllocation, PodAllocation
from vpccni.networkutils.pod import PodInterface, WiredPod

if TYPE_CHECKING:
    from vpccni.ipamd.allocator import Allocator
    from vpccni.ipamd.cardallocator import CardAllocators
    from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
    from vpccni.networkutils.pod import PodWiring

__all__ = [
    "Allocation",
    "HostPodRules",
    "MultiNicAllocator",
    "NoAddressError",
    "NotReady",
    "PendingAllocation",
    "PodAddressAllocator",
    "PodAllocation",
    "PodNetwork",
]


class PodAddressAllocator(Protocol):
    """Pod addresses keyed by the CNI triple (network, container ID, interface name)."""

    def assign(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None, host_veth: str = "",
    ) -> Allocation:  # fmt: skip
        """A free address for the pod; raises ``NoAddressError`` (``retryable``) or ``NotReady``."""
        ...

    def assign_pending(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None, host_veth: str = "",
    ) -> PendingAllocation:  # fmt: skip
        """`assign` with the checkpoint write still running: wire the pod meanwhile, then `wait_written()`
        before answering (it raises when the write failed, the address then already given back)."""
        ...

    def release(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str = "", pod_name: str = "",
        reason: str = "PodDeleted",
    ) -> Allocation | None:  # fmt: skip
        """Give the address back (it cools down); None when nothing was allocated (DEL is idempotent)."""
        ...

    def lookup(self, *, network: str, container_id: str, ifname: str) -> Allocation | None: ...

    def allocations(self) -> tuple[PodAllocation, ...]: ...

    def readiness(self) -> tuple[bool, str]:
        """Whether an ADD can be served now or soon, and why not."""
        ...


class MultiNicAllocator(Protocol):
    """ENABLE_MULTI_NIC: one address per managed network card (``vpccni.ipamd.cardallocator``)."""

    @property
    def cards(self) -> tuple[int, ...]:
        """The managed cards, ascending: a multi-NIC pod gets one interface on each."""
        ...

    def assign_each_card_pending(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None, host_veths: Sequence[str],
    ) -> tuple[PendingAllocation, ...]:  # fmt: skip
        """One address per card, in card order, all or none (``NoAddressError`` names the card); waits up
        to ``timeout_s`` in all (None: each card's allocator's default)."""
        ...

    def assign_each_card(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None,
    ) -> tuple[Allocation, ...]:  # fmt: skip
        """``assign_each_card_pending``, returning once every card's checkpoint has it (gRPC's AddNetwork)."""
        ...

    def lookup_each_card(self, *, network: str, container_id: str, ifname: str) -> tuple[Allocation, ...]:
        """The key's addresses in card order, each with its interface number (``Allocation.interface``)."""
        ...

    def release(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str = "", pod_name: str = "",
        reason: str = "PodDeleted",
    ) -> Allocation | None:  # fmt: skip
        """Every card's address of the key; returns the first card's (None when there was none)."""
        ...


class PodNetwork(Protocol):
    """Pod wiring through the pod's netns fd (``vpccni.networkutils.pod.PodWiring``)."""

    def wire(self, netns_fd: int, spec: PodInterface) -> WiredPod: ...

    def unwire(self, spec: PodInterface, netns_fd: int | None = None, *, keep_veth: bool = False) -> None:
        """Remove the pod's rules and route, and its host veth unless `keep_veth` (it goes with the netns)."""
        ...

    def verify(self, netns_fd: int, spec: PodInterface) -> list[str]: ...

    def host_veth_exists(self, name: str) -> bool: ...


class HostPodRules(Protocol):
    """The host's per-pod policy rules (to-pod 512, from-pod 1536), for GC of rules no pod owns."""

    def pod_rule_addresses(self) -> set[IPv4Address]: ...

    def remove_pod_rules(self, ipv4: IPv4Address) -> int: ...


def _allocator_is_a_port(allocator: Allocator) -> PodAddressAllocator:
    """Type-checked proof that ipamd's allocator fits the port (mypy fails here when they drift apart)."""
    return allocator


def _card_allocators_are_ports(cards: CardAllocators) -> tuple[PodAddressAllocator, MultiNicAllocator]:
    return cards, cards


def _wiring_is_a_port(wiring: PodWiring) -> PodNetwork:
    return wiring


def _netlink_rules_are_a_port(rules: NetlinkHostPodRules) -> HostPodRules:
    return rules
