"""The Grafana dashboard queries only what ipamd exports: every metric name resolves to a series ipamd's
/metrics serves (histograms and summaries by their _bucket/_sum/_count series), and every label a query
selects or groups by is one that metric has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from vpccni.ipamd.metrics import IpamdMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "dashboards" / "vpc-cni.json"
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "instance"}
SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus to every series


def exported() -> dict[str, set[str]]:
    """Series name → label names, for every series ipamd's /metrics can serve."""
    metrics = IpamdMetrics(with_process_metrics=False)
    series: dict[str, set[str]] = {}
    text = metrics.render().decode()
    for wrapper in vars(metrics).values():
        if not isinstance(wrapper, MetricWrapperBase):
            continue
        name, labels = wrapper._name, set(wrapper._labelnames)
        declared = re.findall(rf"^# TYPE ({re.escape(name)}(?:_total)?) (\w+)$", text, re.M)
        assert declared, f"{name} is not in the exposition"
        exposed, mtype = declared[0]
        if mtype == "histogram":
            series.update({f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels})
        elif mtype == "summary":
            series.update({f"{name}_sum": labels, f"{name}_count": labels})
        else:
            series[exposed] = labels
    return series


def queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in doc["panels"] for t in panel["targets"]]


def test_every_metric_and_label_the_dashboard_queries_is_exported() -> None:
    series = exported()
    exprs = queries()
    assert len(exprs) >= 15
    used = set()
    for expr in exprs:
        for name, selector in re.findall(r"\b((?:awscni|vpccni)_[a-z0-9_]+)(\{[^}]*\})?", expr):
            assert name in series, f"{name} (in {expr!r}) is not a series ipamd exports"
            used.add(name)
            for label in re.findall(r"(\w+)\s*=~?", selector or ""):
                assert label in series[name] | SCRAPE_LABELS, f"{name} has no label {label!r}"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                names = re.findall(r"\b((?:awscni|vpccni)_[a-z0-9_]+)", expr)
                assert any(label in series[n] | SCRAPE_LABELS for n in names), (
                    f"no metric of {expr!r} has {label!r}"
                )
    # What the issue asks the dashboard to show.
    for needed in (
        "awscni_total_ip_addresses",
        "awscni_assigned_ip_addresses",
        "awscni_eni_allocated",
        "vpccni_cni_request_duration_seconds_bucket",
        "awscni_ec2api_error_count",
    ):
        assert needed in used


def test_a_misspelt_metric_would_be_caught() -> None:
    assert "awscni_add_ip_req_count_total" not in exported()  # upstream's counters carry no _total
    assert "awscni_add_ip_req_count" in exported()
