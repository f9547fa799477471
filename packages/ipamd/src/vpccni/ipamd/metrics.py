"""Prometheus metrics with upstream's exact `awscni_*` names, types and labels (upstream-contract.md §7).

Everything lives in this object's own `CollectorRegistry` (never the process-global one), so tests and
several instances do not collide. `IpamdMetrics` also implements awsutils' `ApiObserver` (EC2/IMDS call
latency, errors and client-side throttling) and serves `/metrics` from `start()` (default `:61678`).

prometheus-client renames counters to `<name>_total`; upstream's Go exporter does not (cni-metrics-helper
scrapes `awscni_add_ip_req_count` under that name), so `render()` writes the text format itself and exposes
each counter under the name it was declared with.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from vpccni.awsutils.observer import IMDS_API
from vpccni.ipamd.introspection import HttpEndpoint, Response
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.networkutils.model import IPNetwork

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A pod ADD takes milliseconds with a warm pool and up to seconds when it waits for EC2.
CNI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_log = logging.getLogger(__name__)


class IpamdMetrics:
    def __init__(self, *, version: str = "", with_process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._bare_counters: set[str] = set()  # declared names to expose without "_total"
        r = self.registry
        if with_process_metrics:  # upstream exports the Go runtime/process collectors; these are ours
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.ipamd_error_count = self._counter(
            "awscni_ipamd_error_count", "The number of errors encountered in ipamd", ["fn"], registry=r
        )
        self.ipamd_action_inprogress = Gauge(
            "awscni_ipamd_action_inprogress", "The number of ipamd actions in progress", ["fn"], registry=r
        )
        self.eni_max = Gauge(
            "awscni_eni_max",
            "The maximum number of ENIs that can be attached to the instance, accounting for unmanaged ENIs",
            registry=r,
        )
        self.ip_max = Gauge(
            "awscni_ip_max",
            "The maximum number of IP addresses that can be allocated to the instance",
            registry=r,
        )
        self.reconcile_count = self._counter(
            "awscni_reconcile_count",
            "The number of times ipamd reconciles on ENIs and IP/Prefix addresses",
            ["fn"],
            registry=r,
        )
        self.add_ip_req_count = self._counter(
            "awscni_add_ip_req_count", "The number of add IP address requests", registry=r
        )
        self.del_ip_req_count = self._counter(
            "awscni_del_ip_req_count", "The number of delete IP address requests", ["reason"], registry=r
        )
        self.pod_eni_error_count = self._counter(
            "awscni_pod_eni_error_count", "The number of errors encountered for pod ENIs", ["fn"], registry=r
        )
        self.aws_api_latency_ms = Summary(
            "awscni_aws_api_latency_ms", "AWS API call latency in ms", ["api", "error", "status"], registry=r
        )
        self.aws_api_error_count = self._counter(
            "awscni_aws_api_error_count",
            "The number of times AWS API returns an error",
            ["api", "error"],
            registry=r,
        )
        self.aws_utils_error_count = self._counter(
            "awscni_aws_utils_error_count",
            "The number of errors not handled in awsutils library",
            ["fn", "error"],
            registry=r,
        )
        self.ec2api_req_count = self._counter(
            "awscni_ec2api_req_count", "The number of requests made to EC2 APIs by CNI", ["fn"], registry=r
        )
        self.ec2api_error_count = self._counter(
            "awscni_ec2api_error_count", "The number of failed EC2 APIs requests", ["fn"], registry=r
        )
        self.eni_allocated = Gauge("awscni_eni_allocated", "The number of ENIs allocated", registry=r)
        self.total_ip_addresses = Gauge(
            "awscni_total_ip_addresses", "The total number of IP addresses", registry=r
        )
        self.assigned_ip_addresses = Gauge(
            "awscni_assigned_ip_addresses", "The number of IP addresses assigned to pods", registry=r
        )
        self.force_removed_enis = self._counter(
            "awscni_force_removed_enis",
            "The number of ENIs force removed while they had assigned pods",
            registry=r,
        )
        self.force_removed_ips = self._counter(
            "awscni_force_removed_ips",
            "The number of IPs force removed while they had assigned pods",
            registry=r,
        )
        self.total_ipv4_prefixes = Gauge(
            "awscni_total_ipv4_prefixes", "The total number of IPv4 prefixes", registry=r
        )
        self.assigned_ip_per_cidr = Gauge(
            "awscni_assigned_ip_per_cidr",
            "The total number of IP addresses assigned per cidr",
            ["cidr"],
            registry=r,
        )
        self.no_available_ip_addresses = self._counter(
            "awscni_no_available_ip_addresses",
            "The number of pod IP assignments that fail due to no available IP addresses",
            registry=r,
        )
        self.assigned_ip_per_eni = Gauge(
            "awscni_assigned_ip_per_eni", "The number of IP addresses assigned per ENI", ["eni"], registry=r
        )
        self.startup_duration = Histogram(
            "awscni_ipamd_startup_duration_seconds",
            "Time taken by ipamd to start, from process start until it serves",
            ["success", "with_api_server", "failure_reason"],
            registry=r,
        )
        self.node_init_duration = Histogram(
            "awscni_ipamd_node_initialization_duration_seconds",
            "Time taken by ipamd node initialization",
            ["success"],
            registry=r,
        )
        self.connmark_backend = Gauge(
            "awscni_connmark_backend", "The connmark backend in use (1 = active)", ["backend"], registry=r
        )
        self.connmark_reconcile_total = self._counter(
            "awscni_connmark_reconcile_total",
            "Connmark rule reconciliations by result",
            ["result"],
            registry=r,
        )
        self.build_info = Gauge(
            "awscni_build_info", "VPC CNI build information", ["version", "goversion"], registry=r
        )
        # vpccni's own: the client-side EC2 rate limiter (upstream has none).
        self.ec2_throttle_wait_seconds = self._counter(
            "vpccni_ec2_throttle_wait_seconds",
            "Seconds EC2 calls waited for the client-side rate limiter",
            ["category"],
            registry=r,
        )
        self.ec2_throttle_waits = self._counter(
            "vpccni_ec2_throttle_waits",
            "EC2 calls that waited for the client-side rate limiter",
            ["category"],
            registry=r,
        )
        # vpccni's own: how long ipamd takes to answer a CNI request (the shim's connect to the reply).
        self.cni_request_duration = Histogram(
            "vpccni_cni_request_duration_seconds",
            "Time ipamd took to answer a CNI request, by command and result",
            ["command", "result"],
            buckets=CNI_BUCKETS,
            registry=r,
        )
        # vpccni's own: security groups for pods (upstream counts only errors, awscni_pod_eni_error_count).
        self.branch_eni_pods = Gauge(
            "vpccni_branch_eni_pods", "Pods wired through a branch ENI (security groups for pods)", registry=r
        )
        self.trunk_eni_attached = Gauge(
            "vpccni_trunk_eni_attached",
            "1 when the node's trunk ENI is set up (security groups for pods)",
            registry=r,
        )
        self.build_info.labels(version=version, goversion=f"python{platform.python_version()}").set(1)
        self._server = MetricsServer(self.render)
        # Per network card: the labels last set, and (ENIs, total, assigned, prefixes) the node's gauges sum.
        self._per_cidr: dict[int, set[str]] = {}
        self._per_eni: dict[int, set[str]] = {}
        self._card_totals: dict[int, tuple[int, int, int, int]] = {}
        self._lock = threading.Lock()

    # --- awsutils ApiObserver --------------------------------------------------------------------------

    def on_call(self, api: str, duration_s: float, error_code: str | None) -> None:
        failed = error_code is not None
        self.aws_api_latency_ms.labels(
            api=api, error=str(failed).lower(), status=error_code or "200"
        ).observe(duration_s * 1000.0)
        if failed:
            self.aws_api_error_count.labels(api=api, error=error_code).inc()
        if api != IMDS_API:
            self.ec2api_req_count.labels(fn=api).inc()
            if failed:
                self.ec2api_error_count.labels(fn=api).inc()

    def on_throttle_wait(self, category: str, seconds: float) -> None:
        self.ec2_throttle_wait_seconds.labels(category=category).inc(max(seconds, 0.0))
        self.ec2_throttle_waits.labels(category=category).inc()

    @contextlib.contextmanager
    def action(self, fn: str) -> Iterator[None]:
        """Count an ipamd action as in progress (`awscni_ipamd_action_inprogress{fn}`) and its failures
        (`awscni_ipamd_error_count{fn}`), e.g. fn="increaseDatastorePool" as upstream labels them."""
        gauge = self.ipamd_action_inprogress.labels(fn=fn)
        gauge.inc()
        try:
            yield
        except Exception:
            self.ipamd_error_count.labels(fn=fn).inc()
            raise
        finally:
            gauge.dec()

    def observe_cni(self, command: str, seconds: float, *, ok: bool) -> None:
        result = "success" if ok else "error"
        self.cni_request_duration.labels(command=command, result=result).observe(seconds)

    # --- pool gauges ----------------------------------------------------------------------------------

    def update_pool(self, snapshot: PoolSnapshot, *, network_card: int = 0) -> None:
        """Refresh one card's pool gauges (the node's totals sum the cards); labels of CIDRs and ENIs that
        are gone are removed."""
        with self._lock:
            self._set_totals(snapshot, network_card)
            cidrs: set[str] = set()
            enis: set[str] = set()
            for eni in snapshot.enis:
                enis.add(eni.eni_id)
                self.assigned_ip_per_eni.labels(eni=eni.eni_id).set(eni.assigned_ips)
                for c in eni.cidrs:
                    cidrs.add(str(c.cidr))
                    self.assigned_ip_per_cidr.labels(cidr=str(c.cidr)).set(c.assigned)
            for gone in self._per_cidr.get(network_card, set()) - cidrs:
                self.assigned_ip_per_cidr.remove(gone)
            for gone in self._per_eni.get(network_card, set()) - enis:
                self.assigned_ip_per_eni.remove(gone)
            self._per_cidr[network_card], self._per_eni[network_card] = cidrs, enis

    def update_after_pod_change(
        self, snapshot: PoolSnapshot, *, eni_id: str, cidr: IPNetwork, network_card: int = 0
    ) -> None:
        """After one assignment or release: the totals, and the per-ENI and per-CIDR gauges of the ENI and
        CIDR that changed. `update_pool` sets one label per CIDR (in secondary-IP mode one per address), too
        much for every pod; the daemon's housekeeping still runs it for CIDRs and ENIs that come and go."""
        with self._lock:
            self._set_totals(snapshot, network_card)
            for eni in snapshot.enis:
                if eni.eni_id != eni_id:
                    continue
                self.assigned_ip_per_eni.labels(eni=eni_id).set(eni.assigned_ips)
                self._per_eni.setdefault(network_card, set()).add(eni_id)
                for c in eni.cidrs:
                    if c.cidr == cidr:
                        self.assigned_ip_per_cidr.labels(cidr=str(cidr)).set(c.assigned)
                        self._per_cidr.setdefault(network_card, set()).add(str(cidr))

    def _set_totals(self, snapshot: PoolSnapshot, network_card: int) -> None:
        self._card_totals[network_card] = (
            len(snapshot.enis),
            snapshot.total_ips,
            snapshot.assigned_ips,
            snapshot.total_prefixes,
        )
        enis, total, assigned, prefixes = (sum(t) for t in zip(*self._card_totals.values(), strict=True))
        self.eni_allocated.set(enis)
        self.total_ip_addresses.set(total)
        self.assigned_ip_addresses.set(assigned)
        self.total_ipv4_prefixes.set(prefixes)

    def set_limits(self, *, max_enis: int, max_ips: int) -> None:
        self.eni_max.set(max_enis)
        self.ip_max.set(max_ips)

    # --- exposition and server -------------------------------------------------------------------------

    def _counter(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...] | list[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> Counter:
        counter = Counter(name, documentation, list(labels), registry=registry)
        self._bare_counters.add(counter._name)  # the name prometheus-client keeps (without "_total")
        if name.endswith("_total"):
            self._bare_counters.discard(counter._name)
        return counter

    def render(self) -> bytes:
        """The Prometheus text format (0.0.4), counters under their declared names, no `_created` series."""
        out: list[str] = []
        for metric in self.registry.collect():
            name, mtype = metric.name, metric.type
            if mtype == "counter":
                exposed = name if name in self._bare_counters else name + "_total"
            else:
                exposed = name
            if mtype == "unknown":
                mtype = "untyped"
            doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {exposed} {doc}\n# TYPE {exposed} {mtype}\n")
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                sample_name = (
                    exposed if mtype == "counter" and sample.name == name + "_total" else sample.name
                )
                out.append(_sample_line(sample_name, sample))
        return "".join(out).encode()

    def start(self, bind_address: str = ":61678") -> None:
        """Serve /metrics on `host:port` (empty host: all interfaces, as upstream)."""
        self._server.start(bind_address)

    @property
    def address(self) -> str | None:
        return self._server.address

    def stop(self) -> None:
        self._server.stop()


class MetricsServer:
    """Serves ``render()`` (the Prometheus text format) at ``/metrics`` from ``start()``."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._endpoint: HttpEndpoint | None = None

    def _route(self) -> Response:
        return 200, CONTENT_TYPE, self._render()

    def start(self, bind_address: str) -> None:
        if self._endpoint is None:
            self._endpoint = HttpEndpoint(
                bind_address=bind_address, routes={"/metrics": self._route}, name="metrics"
            )
            self._endpoint.start()

    @property
    def address(self) -> str | None:
        return None if self._endpoint is None else self._endpoint.address

    def stop(self) -> None:
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            endpoint.stop()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample_line(name: str, sample: Sample) -> str:
    labels = ""
    if sample.labels:
        labels = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items())) + "}"
    return f"{name}{labels} {floatToGoString(sample.value)}\n"
