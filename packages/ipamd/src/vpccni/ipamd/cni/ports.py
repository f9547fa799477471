"""The two seams the CNI endpoint needs: addresses (ipamd's allocator) and pod wiring (networkutils).

``vpccni.ipamd.allocator.Allocator`` and ``vpccni.networkutils.pod.PodWiring`` implement them; the
stateful fakes in ``vpccni.ipamd.cni.testing`` stand in for them in tests.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from vpccni.cniplugin.netconf import NetConf
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.allocator import Allocation, NoAddressError, NotReady, PendingAllocation, PodAllocation
from vpccni.ipamd.podkey import IPAMKey
from vpccni.networkutils.model import IPAddress
from vpccni.networkutils.names import host_veth_name, interface_index
from vpccni.networkutils.pod import PodInterface, WiredPod

if TYPE_CHECKING:
    from vpccni.ipamd.allocator import Allocator
    from vpccni.ipamd.cardallocator import CardAllocators
    from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
    from vpccni.networkutils.pod import PodWiring

__all__ = [
    "Allocation",
    "BranchPods",
    "HostPodRules",
    "MultiNicAllocator",
    "NoAddressError",
    "NotReady",
    "PendingAllocation",
    "PodAddressAllocator",
    "PodAllocation",
    "PodNetwork",
    "PodRef",
]


@dataclass(frozen=True, kw_only=True)
class PodRef:
    """One attachment a CNI request is about: the CNI triple and the pod's name."""

    network: str
    container_id: str
    ifname: str
    namespace: str
    name: str

    @property
    def index(self) -> int:
        return interface_index(self.ifname)

    @property
    def key(self) -> IPAMKey:
        return IPAMKey(network_name=self.network, container_id=self.container_id, ifname=self.ifname)

    def upstream_veth(self, prefix: str, *, index: int | None = None) -> str:
        """Upstream's host veth name; ``index``: a multi-NIC pod's interface instead of CNI_IFNAME's."""
        return host_veth_name(
            self.namespace, self.name, index=self.index if index is None else index, prefix=prefix
        )

    @property
    def label(self) -> str:
        who = f"{self.namespace}/{self.name}" if self.name else "(no pod name)"
        return f"pod {who} (container {self.container_id}, {self.ifname})"


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

    def unwire(
        self, spec: PodInterface, netns_fd: int | None = None, *, keep_veth: bool = False,
        siblings: Collection[str] = (),
    ) -> None:  # fmt: skip
        """Remove the pod's rules and route, and its host veth unless `keep_veth` (it goes with the netns,
        when that holds no interface but this one and its `siblings`)."""
        ...

    def verify(self, netns_fd: int, spec: PodInterface) -> list[str]: ...

    def host_veth_exists(self, name: str) -> bool: ...


class BranchPods(Protocol):
    """Branch-ENI pods (security groups for pods, `vpccni.ipamd.sgp.cni.BranchCni`): asked first, they
    answer for the pods they own and return None/False for the others, which the datastore serves."""

    def add(
        self, pod: PodRef, conf: NetConf, netns_fd: int, netns_path: str, *, wait_s: float
    ) -> dict[str, Any] | None:
        """Wire a branch-ENI pod and return its result (current version); None for an ordinary pod.
        Raises CNIError."""
        ...

    def delete(
        self, pod: PodRef, conf: NetConf, version: str, netns_fd: int | None, *, keep_veth: bool
    ) -> bool:
        """Tear down a branch-ENI pod known to ipamd or to its prevResult; False when it is not one."""
        ...

    def check(self, pod: PodRef, conf: NetConf, netns_fd: int) -> list[str] | None:
        """What drifted from a branch-ENI pod's wiring; None when the attachment is not a branch pod's."""
        ...

    def collect(self, network: str, keep: set[tuple[str, str]]) -> list[str]:
        """GC: tear down the network's branch-ENI pods not in `keep`; the errors."""
        ...

    def addresses(self) -> set[IPAddress]:
        """The addresses of the live branch-ENI pods (their rules are not leftovers)."""
        ...


class HostPodRules(Protocol):
    """The host's per-pod policy rules (to-pod 512, from-pod 1536), for GC of rules no pod owns."""

    def pod_rule_addresses(self) -> set[IPAddress]: ...

    def remove_pod_rules(self, ip: IPAddress) -> int: ...


def _allocator_is_a_port(allocator: Allocator) -> PodAddressAllocator:
    """Type-checked proof that ipamd's allocator fits the port (mypy fails here when they drift apart)."""
    return allocator


def _card_allocators_are_ports(cards: CardAllocators) -> tuple[PodAddressAllocator, MultiNicAllocator]:
    return cards, cards


def _wiring_is_a_port(wiring: PodWiring) -> PodNetwork:
    return wiring


def _netlink_rules_are_a_port(rules: NetlinkHostPodRules) -> HostPodRules:
    return rules


class ChainedPlugin(Protocol):
    """Another plugin type of the conflist served by ipamd (egress-cni), keyed by its ``type``."""

    def handle(self, request: Request, netns_fd: int | None, *, answer_by: float | None = None) -> object: ...

    def abandon_add(self, request: Request, netns_fd: int | None) -> None: ...

    def delete_queued(self, request: Request) -> None: ...

    def add_with_pod(self, request: Request, netns_fd: int, version: str) -> list[dict[str, Any]]:
        """aws-cni's ADD of the pod succeeded but for its answer: do this plugin's part now and return the
        interfaces to list in aws-cni's result (where this plugin's ADD, which comes next, finds them)."""
        ...

    def forget(self, request: Request, netns_fd: int | None, *, remove_veth: bool = False) -> None:
        """aws-cni's DEL of the pod (or its rollback, ``remove_veth``): what this plugin did for it goes
        too (idempotent)."""
        ...

    @property
    def pod_ifnames(self) -> Collection[str]:
        """The interfaces this plugin adds in the pod beside aws-cni's: a DEL of the pod leaves them to go
        with its namespace, as it does aws-cni's own."""
        ...
