"""Stateful fakes for the CNI endpoint's ports (product code never imports this module).

``FakeAllocator`` hands out a fixed list of addresses with the allocator's real semantics (keyed by the
CNI triple, ``NoAddressError``/``NotReady``, release of unknown pods returns None). ``FakePodNetwork``
remembers what is wired per pod and can be told that something drifted, for CHECK. ``serve_in_netns``
runs the real endpoint with real wiring for netns-tier and e2e tests.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace
from ipaddress import ip_address

from vpccni.ipamd.cardallocator import CardAllocators
from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
from vpccni.ipamd.cni.ports import (
    Allocation,
    MultiNicAllocator,
    NoAddressError,
    NotReady,
    PendingAllocation,
    PodAddressAllocator,
    PodAllocation,
)
from vpccni.ipamd.cni.server import CniEndpoint, EndpointSettings
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.egress.netconf import EgressNetConf
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.networkutils.model import IPAddress
from vpccni.networkutils.netlink import open_netlink
from vpccni.networkutils.netns import ThreadNetnsNetlink, run_in_netns, setns
from vpccni.networkutils.pod import PodInterface, PodWiring, WiredPod


def secondary_ips(
    first: str, count: int, *, device_number: int = 1, route_table: int = 2, network_card: int = 0
) -> list[Allocation]:
    """``count`` consecutive addresses from ``first`` (IPv4 or IPv6) on one ENI."""
    start = ip_address(first)
    return [
        Allocation(
            ip=start + i,
            device_number=device_number,
            route_table=route_table,
            eni_id=f"eni-{network_card}{device_number:03x}",
            network_card=network_card,
        )
        for i in range(count)
    ]


class FakeAllocator:
    def __init__(self, addresses: Iterable[Allocation]) -> None:
        self._free = list(addresses)
        self._assigned: dict[IPAMKey, tuple[PodMetadata, Allocation]] = {}
        self._lock = threading.Lock()
        self.ready = True
        self.not_ready_reason = "node initialisation has not finished"
        self.exhausted_state = GrowthState.AT_MAX_PODS
        self.released: list[tuple[IPAMKey, str]] = []
        self.fail_next_write: Exception | None = None

    def mark_ready(self) -> None:
        self.ready = True

    def assign(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None, host_veth: str = "", interfaces_count: int = 1,
    ) -> Allocation:  # fmt: skip
        if not self.ready:
            raise NotReady(self.not_ready_reason)
        key = IPAMKey(network_name=network, container_id=container_id, ifname=ifname)
        with self._lock:
            if key in self._assigned:
                return self._assigned[key][1]
            if not self._free:
                status = PoolStatus(state=self.exhausted_state)
                raise NoAddressError(
                    f"failed to assign an IP address to pod {pod_namespace}/{pod_name}: no free address; "
                    f"{status.message}",
                    status=status,
                    retryable=status.retryable,
                )
            allocation = replace(self._free.pop(0), host_veth=host_veth)
            meta = PodMetadata(
                namespace=pod_namespace, name=pod_name, host_veth=host_veth, interfaces_count=interfaces_count
            )
            self._assigned[key] = (meta, allocation)
            return allocation

    def assign_pending(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str, pod_name: str,
        timeout_s: float | None = None, host_veth: str = "", interfaces_count: int = 1,
    ) -> PendingAllocation:  # fmt: skip
        """`assign`, "written" at once; `fail_next_write` makes the write fail and gives the address back."""
        allocation = self.assign(
            network=network, container_id=container_id, ifname=ifname, pod_namespace=pod_namespace,
            pod_name=pod_name, timeout_s=timeout_s, host_veth=host_veth, interfaces_count=interfaces_count,
        )  # fmt: skip
        written: Future[None] = Future()
        if self.fail_next_write is not None:
            error, self.fail_next_write = self.fail_next_write, None
            self.release(network=network, container_id=container_id, ifname=ifname, reason="WriteFailed")
            written.set_exception(error)
        else:
            written.set_result(None)
        return PendingAllocation(allocation=allocation, written=written)

    def release(
        self, *, network: str, container_id: str, ifname: str, pod_namespace: str = "", pod_name: str = "",
        reason: str = "PodDeleted",
    ) -> Allocation | None:  # fmt: skip
        key = IPAMKey(network_name=network, container_id=container_id, ifname=ifname)
        with self._lock:
            entry = self._assigned.pop(key, None)
            if entry is None:
                return None
            self._free.append(replace(entry[1], host_veth=""))
            self.released.append((key, reason))
            return entry[1]

    def lookup(self, *, network: str, container_id: str, ifname: str) -> Allocation | None:
        with self._lock:
            entry = self._assigned.get(
                IPAMKey(network_name=network, container_id=container_id, ifname=ifname)
            )
        return None if entry is None else entry[1]

    def allocations(self) -> tuple[PodAllocation, ...]:
        with self._lock:
            return tuple(
                PodAllocation(key=k, metadata=m, allocation=a) for k, (m, a) in sorted(
                    self._assigned.items(), key=lambda item: (item[0].container_id, item[0].ifname)
                )
            )  # fmt: skip

    def readiness(self) -> tuple[bool, str]:
        if not self.ready:
            return False, self.not_ready_reason
        with self._lock:
            if not self._free:
                return False, PoolStatus(state=self.exhausted_state).message
        return True, "ready"

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)


def two_cards(count: int = 3) -> tuple[CardAllocators, FakeAllocator, FakeAllocator]:
    """A node with two network cards: card 0's addresses on its primary ENI (main table), card 1's on its
    device 0 (table 10100), ``count`` each."""
    first = FakeAllocator(secondary_ips("10.0.1.10", count, device_number=0, route_table=254))
    second = FakeAllocator(
        secondary_ips("10.0.2.10", count, device_number=0, route_table=10100, network_card=1)
    )
    return CardAllocators({0: first, 1: second}), first, second


class FakePodNetwork:
    """Wired pods by host veth; ``drift(host_veth, problem)`` makes verify report a problem."""

    def __init__(self) -> None:
        self.wired: dict[str, tuple[int, PodInterface]] = {}
        self.fail_next_wire: Exception | None = None
        self.fail_wire_of: dict[str, Exception] = {}  # by pod interface name, once
        self.fail_unwire: Exception | None = None
        self.unwired: list[PodInterface] = []
        self.veths_kept: list[str] = []  # host veths a DEL left to vanish with the pod's namespace
        self._drift: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def wire(self, netns_fd: int, spec: PodInterface) -> WiredPod:
        with self._lock:
            if self.fail_next_wire is not None:
                exc, self.fail_next_wire = self.fail_next_wire, None
                raise exc
            if spec.ifname in self.fail_wire_of:
                raise self.fail_wire_of.pop(spec.ifname)
            if any(fd == netns_fd and s.ifname == spec.ifname for fd, s in self.wired.values()):
                raise RuntimeError(f"interface {spec.ifname} already exists in the pod namespace")
            self.wired[spec.host_veth] = (netns_fd, spec)
        return WiredPod(
            host_veth=spec.host_veth, host_mac="02:00:00:00:00:01", ifname=spec.ifname,
            container_mac="02:00:00:00:00:02", ip=spec.ip, gateway=spec.gateway,
        )  # fmt: skip

    def unwire(
        self, spec: PodInterface, netns_fd: int | None = None, *, keep_veth: bool = False,
        siblings: Collection[str] = (),
    ) -> None:  # fmt: skip
        with self._lock:
            if self.fail_unwire is not None:
                raise self.fail_unwire
            # As PodWiring: a namespace that keeps other interfaces lives on, so the veth goes now.
            going = {spec.ifname, *siblings}
            others = any(fd == netns_fd and s.ifname not in going for fd, s in self.wired.values())
            if keep_veth and not (netns_fd is not None and others):
                self.veths_kept.append(spec.host_veth)
            self.wired.pop(spec.host_veth, None)
            self._drift.pop(spec.host_veth, None)
            self.unwired.append(spec)

    def host_veth_exists(self, name: str) -> bool:
        with self._lock:
            return name in self.wired

    def verify(self, netns_fd: int, spec: PodInterface) -> list[str]:
        with self._lock:
            current = self.wired.get(spec.host_veth)
            if current is None:
                return [f"host veth {spec.host_veth} missing"]
            problems = list(self._drift.get(spec.host_veth, []))
            if current[1] != spec:
                problems.append(f"wired as {current[1]}, expected {spec}")
            return problems

    def drift(self, host_veth: str, problem: str) -> None:
        with self._lock:
            self._drift.setdefault(host_veth, []).append(problem)


class FakeHostPodRules:
    def __init__(self, addresses: Iterable[IPAddress] = ()) -> None:
        self.addresses = set(addresses)

    def pod_rule_addresses(self) -> set[IPAddress]:
        return set(self.addresses)

    def remove_pod_rules(self, ip: IPAddress) -> int:
        if ip in self.addresses:
            self.addresses.discard(ip)
            return 2
        return 0


@contextmanager
def serve_in_netns(
    *, netns_fd: int, allocator: PodAddressAllocator, socket_path: str, del_queue_dir: str, workers: int = 4,
    multi_nic: MultiNicAllocator | None = None, egress: EgressNetConf | None = None,
) -> Iterator[CniEndpoint]:  # fmt: skip
    """The real endpoint with real pod wiring, its "host" being the namespace ``netns_fd`` (a test's node
    namespace, never the machine's): the worker threads enter it before they serve. ``multi_nic``: the
    card allocator (``two_cards``) when the node serves multi-NIC pods. egress-cni is served as ipamd serves
    it, wired with aws-cni's ADD on ``egress`` (the node's settings) when given."""
    from vpccni.ipamd.cni.server import CniEndpoint
    from vpccni.ipamd.egress.netconf import PLUGIN_TYPE
    from vpccni.ipamd.egress.service import EgressService

    host = run_in_netns(netns_fd, open_netlink)
    wiring = PodWiring(host=host, namespaces=ThreadNetnsNetlink())
    service = CniService(
        allocator=allocator,
        network=wiring,
        host_rules=NetlinkHostPodRules(host),
        multi_nic=multi_nic,
        chained={PLUGIN_TYPE: EgressService(wiring=wiring, node_conf=egress)},
    )
    endpoint = CniEndpoint(
        service=service,
        settings=EndpointSettings(socket_path=socket_path, del_queue_dir=del_queue_dir, workers=workers),
        worker_init=lambda: setns(netns_fd),
    )
    try:
        endpoint.start()
        try:
            yield endpoint
        finally:
            endpoint.stop()
    finally:
        host.close()
