"""``USE_PROMETHEUS``: the cluster sums of upstream's six pool gauges under their own names, plus the
helper's own view of its scrapes, on ``:61681/metrics``."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from vpccni.ipamd.metrics import MetricsServer
from vpccni.ipamd.metricshelper.table import PROMETHEUS_GAUGES

_HELP = {
    "awscni_eni_max": "The maximum number of ENIs that can be attached to the instances of the cluster",
    "awscni_ip_max": "The maximum number of IP addresses the instances of the cluster can have",
    "awscni_eni_allocated": "The number of ENIs allocated in the cluster",
    "awscni_total_ip_addresses": "The total number of IP addresses in the cluster",
    "awscni_assigned_ip_addresses": "The number of IP addresses assigned to pods in the cluster",
    "awscni_total_ipv4_prefixes": "The total number of IPv4 prefixes in the cluster",
}


class PrometheusExport:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._gauges = {name: Gauge(name, _HELP[name], registry=self.registry) for name in PROMETHEUS_GAUGES}
        self.targets = Gauge(
            "vpccni_metrics_helper_targets", "aws-node pods found in the last scrape", registry=self.registry
        )
        self.scrape_failures = Counter(
            "vpccni_metrics_helper_scrape_failures",
            "aws-node pods whose metrics could not be read",
            registry=self.registry,
        )
        self.server = MetricsServer(lambda: generate_latest(self.registry))

    def update(self, gauges: Mapping[str, float], *, targets: int, failed: int) -> None:
        for name, value in gauges.items():
            self._gauges[name].set(value)
        self.targets.set(targets)
        self.scrape_failures.inc(failed)
