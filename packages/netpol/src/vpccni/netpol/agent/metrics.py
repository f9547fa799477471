"""The agent's Prometheus metrics (served on `--metrics-bind-addr`, upstream's port 8162)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from vpccni.netpol.agent.engine import ApplyStats
from vpccni.netpol.httpserve import Response


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.writes = Counter(
            "vpccni_netpol_table_writes", "policy table transactions written", registry=self.registry
        )
        self.write_seconds = Histogram(
            "vpccni_netpol_table_write_seconds",
            "time to compute and write the policy table",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.pods = Gauge("vpccni_netpol_pods", "local pods the agent enforces", registry=self.registry)
        self.chains = Gauge(
            "vpccni_netpol_chains", "distinct policy chains in the table", registry=self.registry
        )
        self.elements = Gauge(
            "vpccni_netpol_set_elements", "set elements in the table", registry=self.registry
        )
        self.enforce = Counter(
            "vpccni_netpol_enforce_requests", "EnforceNpToPod calls", ["result"], registry=self.registry
        )

    def applied(self, stats: ApplyStats) -> None:
        self.pods.set(stats.pods)
        self.chains.set(stats.chains)
        self.elements.set(stats.elements)
        if stats.written:
            self.writes.inc()
            self.write_seconds.observe(stats.seconds)

    def exposition(self, _: object) -> Response:
        return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
