"""Upstream's pool metrics around the pool's ports, so the pool manager and reconciler stay metric-free.

- `awscni_ipamd_action_inprogress{fn}` / `awscni_ipamd_error_count{fn}`: EC2 work that grows the pool counts
  as `increaseDatastorePool`, work that gives addresses back as `decreaseDatastorePool`, a reconcile as
  `nodeIPPoolReconcile` (upstream's function names).
- `awscni_reconcile_count{fn}`, `awscni_force_removed_enis`, `awscni_force_removed_ips` from each reconcile's
  report.
- A missing IAM permission (EC2 `UnauthorizedOperation`) is handed to `on_denied` (the daemon raises
  upstream's `MissingIAMPermissions` event on its pod).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.ipamd.ports import CloudError, CloudPort, EniDescription, EniRequest
from vpccni.ipamd.reconcile import Reconciler
from vpccni.networkutils.model import IPNetwork

INCREASE = "increaseDatastorePool"
DECREASE = "decreaseDatastorePool"
RECONCILE = "nodeIPPoolReconcile"
UNAUTHORIZED_CODE = "UnauthorizedOperation"


class ObservedCloud:
    """A `CloudPort` that reports the pool's EC2 work as upstream's in-progress actions and errors."""

    def __init__(
        self,
        cloud: CloudPort,
        metrics: IpamdMetrics,
        *,
        on_denied: Callable[[CloudError], None] = lambda err: None,
    ) -> None:
        self._cloud = cloud
        self._metrics = metrics
        self._on_denied = on_denied

    @contextmanager
    def _action(self, fn: str) -> Iterator[None]:
        with self._metrics.action(fn):
            try:
                yield
            except CloudError as err:
                if err.code == UNAUTHORIZED_CODE:
                    self._on_denied(err)
                raise

    def allocate_eni(self, request: EniRequest) -> EniDescription:
        with self._action(INCREASE):
            return self._cloud.allocate_eni(request)

    def assign_ips(self, eni_id: str, count: int) -> tuple[IPv4Address, ...]:
        with self._action(INCREASE):
            return self._cloud.assign_ips(eni_id, count)

    def assign_prefixes(self, eni_id: str, count: int) -> tuple[IPv4Network, ...]:
        with self._action(INCREASE):
            return self._cloud.assign_prefixes(eni_id, count)

    def assign_ipv6_prefix(self, eni_id: str) -> tuple[IPv6Network, ...]:
        with self._action(INCREASE):
            return self._cloud.assign_ipv6_prefix(eni_id)

    def unassign(
        self, eni_id: str, *, ips: Sequence[IPv4Address] = (), prefixes: Sequence[IPNetwork] = ()
    ) -> None:
        with self._action(DECREASE):
            self._cloud.unassign(eni_id, ips=ips, prefixes=prefixes)

    def free_eni(self, eni_id: str) -> None:
        with self._action(DECREASE):
            self._cloud.free_eni(eni_id)

    def describe_enis(self, eni_ids: Sequence[str]) -> tuple[EniDescription, ...]:
        return self._cloud.describe_enis(eni_ids)

    def tag_eni(self, eni_id: str, tags: dict[str, str]) -> None:
        self._cloud.tag_eni(eni_id, tags)


class ObservedReconciler:
    """The pool's `PoolReconciler`: runs the reconciler and turns its report into upstream's counters."""

    def __init__(self, reconciler: Reconciler, metrics: IpamdMetrics) -> None:
        self._reconciler = reconciler
        self._metrics = metrics

    def reconcile(self) -> None:
        with self._metrics.action(RECONCILE):
            self._reconciler.reconcile()
        report, m = self._reconciler.last_report, self._metrics
        for fn, count in (
            ("eniReconcileAdd", len(report.added_enis)),
            ("eniReconcileDel", len(report.removed_enis)),
            ("eniIPPoolReconcileAdd", len(report.added_cidrs)),
            ("eniIPPoolReconcileDel", len(report.removed_cidrs)),
        ):
            if count:
                m.reconcile_count.labels(fn=fn).inc(count)
        if report.removed_enis:
            m.force_removed_enis.inc(len(report.removed_enis))
        if report.pods_force_removed:
            m.force_removed_ips.inc(report.pods_force_removed)

    def resync_eni(self, eni_id: str) -> None:
        self._reconciler.resync_eni(eni_id)
