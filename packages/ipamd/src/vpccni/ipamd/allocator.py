"""The allocator: what the CNI endpoint and the gRPC backend call to give pods addresses and take them back.

Beyond upstream: an assignment that leaves the pool below target wakes the pool manager at once (instead of
on its next 5 s tick), and an ADD that finds the pool empty while the pool is growing waits (bounded) for new
addresses instead of failing. When it truly cannot serve, the error says why, from the pool manager's
`PoolStatus` (max pods, subnet exhausted, throttled, no ENI slots, provisioning disabled...).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Protocol

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.ipamd.datastore.model import AssignedAddress, NoAddressAvailable, UnknownPod
from vpccni.ipamd.datastore.records import PodAddress, route_table_id
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.networkutils.names import interface_index

_log = logging.getLogger(__name__)

# While waiting, re-read the pool status at least this often (it may turn from "growing" to "exhausted").
_STATUS_POLL_S = 0.5


@dataclass(frozen=True, kw_only=True)
class Allocation:
    ip: PodAddress
    device_number: int
    route_table: int
    eni_id: str
    host_veth: str = ""  # the pod's host veth when it is not upstream's name (PodMetadata.host_veth)
    network_card: int = 0
    interface: int = 0  # a multi-NIC pod's interface this address is for (its card's place among the pod's)


@dataclass(frozen=True, kw_only=True)
class PendingAllocation:
    """An assignment whose checkpoint write may still be running."""

    allocation: Allocation
    written: Future[None]

    def wait_written(self, timeout_s: float | None = None) -> None:
        """Return once the assignment is in the checkpoint; raises CheckpointWriteFailed (the assignment
        was rolled back) when the write failed."""
        self.written.result(timeout_s)


@dataclass(frozen=True, kw_only=True)
class PodAllocation:
    key: IPAMKey
    metadata: PodMetadata
    allocation: Allocation

    @property
    def interface_index(self) -> int:
        """The pod interface holding the address: its place in a multi-NIC pod, else by name (`eth<N>`)."""
        return self.allocation.interface or interface_index(self.key.ifname)


class PoolSignals(Protocol):
    """The pool manager as the allocator sees it (`vpccni.ipamd.pool.manager.PoolManager`)."""

    @property
    def status(self) -> PoolStatus: ...

    def wake(self) -> None: ...

    def wake_if_low(self, snapshot: PoolSnapshot) -> bool: ...

    def waiting(self) -> AbstractContextManager[None]:
        """Held while an ADD waits for the pool to grow: the pool grows for the ADDs waiting."""
        ...


class AllocationListener(Protocol):
    """Told of every assignment (once it is in the checkpoint) and release; must return at once."""

    def assigned(self, pod: PodAllocation) -> None: ...

    def released(self, pod: PodAllocation) -> None: ...


class NoAddressError(Exception):
    """No address for the pod. `retryable` is true when the pool may still grow (CNI code 11, try later)."""

    def __init__(self, message: str, *, status: PoolStatus, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class NotReady(Exception):
    """ipamd has not finished node init (ENIs and checkpoint not restored); retry shortly."""


class Allocator:
    """Thread-safe; holds no lock of its own beyond the datastore's (and the readiness flag)."""

    def __init__(
        self,
        *,
        datastore: DataStore,
        pool: PoolSignals,
        metrics: IpamdMetrics | None = None,
        default_timeout_s: float = 10.0,
        clock: Clock | None = None,
        listeners: Sequence[AllocationListener] = (),
    ) -> None:
        self._ds = datastore
        self._pool = pool
        self._metrics = metrics
        self._listeners = tuple(listeners)
        self._default_timeout_s = default_timeout_s
        self._clock: Clock = clock or SystemClock()
        self._ready = threading.Event()
        self._not_ready_reason = "node initialisation has not finished (ENIs and checkpoint not restored yet)"

    # --- lifecycle ------------------------------------------------------------------------------------

    def mark_ready(self) -> None:
        """Call once ENIs are in the datastore and the checkpoint is restored."""
        self._ready.set()

    def readiness(self) -> tuple[bool, str]:
        if not self._ready.is_set():
            return False, self._not_ready_reason
        status = self._pool.status
        if status.state is GrowthState.TERMINATING:
            return False, status.message
        # CNI STATUS means "an ADD would succeed now or soon": a free address, or a pool that can still grow.
        if not status.may_grow_soon and self._free_now() == 0:
            return False, f"no free address and the pool cannot grow: {status.message}"
        return True, "ready"

    def _free_now(self) -> int:
        snapshot = self._ds.snapshot()
        return sum(c.free - c.in_cooldown for e in snapshot.usable_enis for c in e.cidrs)

    # --- the port ---------------------------------------------------------------------------------------

    def assign(
        self,
        *,
        network: str,
        container_id: str,
        ifname: str,
        pod_namespace: str,
        pod_name: str,
        timeout_s: float | None = None,
        interfaces_count: int = 1,
        host_veth: str = "",
    ) -> Allocation:
        """The pod's address (the same one again for a repeated ADD), in the checkpoint on return.

        Waits up to `timeout_s` while the pool grows or an address leaves cooldown; raises NoAddressError
        (with the reason) or NotReady.
        """
        key = IPAMKey(network_name=network, container_id=container_id, ifname=ifname)
        meta = PodMetadata(
            namespace=pod_namespace, name=pod_name, interfaces_count=interfaces_count, host_veth=host_veth
        )
        got = self._take(key, meta, timeout_s, lambda: self._ds.assign(key, meta))
        self._tell(got, assigned=True)
        return _allocation(got)

    def assign_pending(
        self,
        *,
        network: str,
        container_id: str,
        ifname: str,
        pod_namespace: str,
        pod_name: str,
        timeout_s: float | None = None,
        interfaces_count: int = 1,
        host_veth: str = "",
    ) -> PendingAllocation:
        """`assign`, returning while the checkpoint write still runs: the CNI endpoint wires the pod
        meanwhile and calls `wait_written()` before it answers."""
        key = IPAMKey(network_name=network, container_id=container_id, ifname=ifname)
        meta = PodMetadata(
            namespace=pod_namespace, name=pod_name, interfaces_count=interfaces_count, host_veth=host_veth
        )
        written: list[Future[None]] = []

        def take() -> AssignedAddress:
            view, future = self._ds.assign_pending(key, meta)
            written.append(future)
            return view

        got = self._take(key, meta, timeout_s, take)
        if self._listeners:

            def written_ok(future: Future[None]) -> None:
                if future.exception() is None:  # a failed write rolled the assignment back
                    self._tell(got, assigned=True)

            written[-1].add_done_callback(written_ok)
        return PendingAllocation(allocation=_allocation(got), written=written[-1])

    def _take(
        self, key: IPAMKey, meta: PodMetadata, timeout_s: float | None, take: Callable[[], AssignedAddress]
    ) -> AssignedAddress:
        if not self._ready.is_set():
            raise NotReady(self._not_ready_reason)
        if self._metrics is not None:
            self._metrics.add_ip_req_count.inc()
        wait_s = self._default_timeout_s if timeout_s is None else timeout_s
        deadline = self._clock.monotonic() + wait_s
        waited = False
        with ExitStack() as demand:
            while True:
                try:
                    got = take()
                except NoAddressAvailable as exc:
                    self._pool.wake()  # don't wait for the pool's next tick
                    status = self._pool.status
                    remaining = deadline - self._clock.monotonic()
                    cooling_soon = (
                        exc.counts.next_free_in_s is not None and exc.counts.next_free_in_s < remaining
                    )
                    if remaining > 0 and (status.may_grow_soon or cooling_soon):
                        if not waited:
                            _log.info(
                                "pool empty for %s/%s: waiting up to %.1fs (%s)",
                                meta.namespace,
                                meta.name,
                                remaining,
                                status.message,
                            )
                            waited = True
                            if not cooling_soon:  # an address leaving cooldown serves it: no growth for it
                                demand.enter_context(self._pool.waiting())
                        self._ds.wait_for_change(min(remaining, _STATUS_POLL_S))
                        continue
                    if self._metrics is not None:
                        self._metrics.no_available_ip_addresses.inc()
                    raise self._no_address(
                        exc, status, meta.namespace, meta.name, waited_s=wait_s if waited else 0.0
                    ) from exc
                snapshot = self._ds.snapshot()
                self._pool.wake_if_low(snapshot)
                self._refresh_gauges(snapshot, got)
                return got

    def release(
        self,
        *,
        network: str,
        container_id: str,
        ifname: str,
        pod_namespace: str = "",
        pod_name: str = "",
        reason: str = "PodDeleted",
    ) -> Allocation | None:
        """Give the pod's address back (it cools down); None when the pod is unknown (DEL is idempotent)."""
        key = IPAMKey(network_name=network, container_id=container_id, ifname=ifname)
        if self._metrics is not None:
            self._metrics.del_ip_req_count.labels(reason=reason).inc()
        try:
            released = self._ds.release(key)
        except UnknownPod:
            _log.info(
                "release for unknown pod %s/%s (container %s, %s): nothing to do",
                pod_namespace,
                pod_name,
                container_id,
                ifname,
            )
            return None
        if self._metrics is not None:
            self._refresh_gauges(self._ds.snapshot(), released)
        self._tell(released, assigned=False)
        return _allocation(released)

    def lookup(self, *, network: str, container_id: str, ifname: str) -> Allocation | None:
        got = self._ds.lookup(IPAMKey(network_name=network, container_id=container_id, ifname=ifname))
        return None if got is None else _allocation(got)

    def allocations(self) -> tuple[PodAllocation, ...]:
        return tuple(
            PodAllocation(key=a.key, metadata=a.metadata, allocation=_allocation(a))
            for a in self._ds.assigned()
        )

    # --- internals --------------------------------------------------------------------------------------

    def _tell(self, address: AssignedAddress, *, assigned: bool) -> None:
        if not self._listeners:
            return
        pod = PodAllocation(key=address.key, metadata=address.metadata, allocation=_allocation(address))
        for listener in self._listeners:
            try:
                if assigned:
                    listener.assigned(pod)
                else:
                    listener.released(pod)
            except Exception:
                _log.exception("allocation listener %s failed", type(listener).__name__)

    def _refresh_gauges(self, snapshot: PoolSnapshot, changed: AssignedAddress) -> None:
        if self._metrics is not None:
            self._metrics.update_after_pod_change(
                snapshot, eni_id=changed.eni_id, cidr=changed.cidr, network_card=changed.network_card
            )

    def _no_address(
        self, exc: NoAddressAvailable, status: PoolStatus, namespace: str, name: str, *, waited_s: float
    ) -> NoAddressError:
        why = status.message if status.state is not GrowthState.OK else "the pool is below its target"
        waited = f" after waiting {waited_s:.1f}s" if waited_s else ""
        message = f"failed to assign an IP address to pod {namespace}/{name}{waited}: {exc}; {why}"
        return NoAddressError(message, status=status, retryable=status.retryable)


def _allocation(a: AssignedAddress) -> Allocation:
    return Allocation(
        ip=a.ip,
        device_number=a.device_number,
        route_table=route_table_id(a.device_number, a.network_card),
        eni_id=a.eni_id,
        host_veth=a.metadata.host_veth,
        network_card=a.network_card,
    )
