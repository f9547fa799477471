"""One scrape round of every aws-node becomes the cluster's datapoints, as upstream's helper aggregates them
(gauges summed; the API latency the largest of the nodes), with two fixes:

- counters are turned into increases per aws-node pod (by UID) before they are summed, so a node joining,
  leaving or restarting does not show as a cluster-wide spike or drop (upstream diffs the cluster sum, and
  publishes the raw total after a "reset"); a pod seen for the first time contributes no increase yet, and
  a counter that went down (the pod restarted) contributes its new value, as Prometheus' increase() counts;
- a summary without quantiles (ipamd's ``awscni_aws_api_latency_ms`` from the Python client) gives the mean
  latency of the interval (Δsum/Δcount); one with a 0.99 quantile (the Go aws-node) gives that quantile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vpccni.ipamd.metricshelper.scrape import Family, NodeScrape
from vpccni.ipamd.metricshelper.table import METRIC_TABLE, PROMETHEUS_GAUGES, Conversion, Reduce


@dataclass(frozen=True, kw_only=True)
class Datum:
    """One CloudWatch datapoint (upstream publishes every metric with unit Count)."""

    name: str
    value: float
    unit: str = "Count"


@dataclass(frozen=True, kw_only=True)
class RoundResult:
    datums: tuple[Datum, ...]
    gauges: dict[str, float]  # the Prometheus re-export: cluster sums of PROMETHEUS_GAUGES
    targets: int
    failed: int


class Aggregator:
    """Keeps each pod's last counter values between rounds; not thread-safe (one loop drives it)."""

    def __init__(self, table: Sequence[Conversion] = METRIC_TABLE) -> None:
        self._table = tuple(table)
        self._last: dict[tuple[str, str], tuple[float, float]] = {}

    def round(self, scrapes: Sequence[NodeScrape]) -> RoundResult:
        answered = [s for s in scrapes if not s.error]
        seen: set[tuple[str, str]] = set()
        datums = []
        for conversion in self._table:
            values = []
            for scrape in answered:
                family = scrape.families.get(conversion.metric)
                if family is None:
                    continue
                key = (scrape.uid or scrape.pod, conversion.metric)
                seen.add(key)
                values.append(self._node_value(key, family))
            if values:
                combined = max(values) if conversion.reduce is Reduce.MAX else sum(values)
                datums.append(Datum(name=conversion.cloudwatch, value=combined))
        for gone in set(self._last) - seen:
            del self._last[gone]
        gauges = {name: sum(s.value(name) for s in answered) for name in PROMETHEUS_GAUGES}
        return RoundResult(
            datums=tuple(datums), gauges=gauges, targets=len(scrapes), failed=len(scrapes) - len(answered)
        )

    def _node_value(self, key: tuple[str, str], family: Family) -> float:
        if family.type == "gauge" or family.type == "untyped":
            return family.value
        if family.p99 is not None:
            return family.p99
        previous = self._last.get(key)
        self._last[key] = (family.value, family.count)
        if previous is None:
            return 0.0
        value, count = family.value - previous[0], family.count - previous[1]
        if value < 0 or count < 0:  # the pod restarted: everything it counted since is new
            value, count = family.value, family.count
        if family.type in ("summary", "histogram"):
            return value / count if count > 0 else 0.0
        return value
