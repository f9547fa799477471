"""Reading every aws-node's ``/metrics`` the way upstream's helper does: list the pods labelled
``k8s-app=aws-node`` in kube-system and GET ``:61678/metrics`` on each through the API server's pod proxy.
The operator CLI's ``vpccni cluster`` reads the same scrape."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from vpccni.k8sapi.cluster import AWS_NODE_NAMESPACE, AWS_NODE_SELECTOR, ClusterReader
from vpccni.k8sapi.errors import K8sApiError

log = logging.getLogger(__name__)

METRICS_PORT = 61678


@dataclass(frozen=True, kw_only=True)
class Family:
    """One metric family of one node, reduced to what the helper needs: the sum of its samples (counters and
    gauges), or for a summary its sum, count and largest 0.99 quantile (Go exporters have quantiles)."""

    type: str
    value: float = 0.0
    count: float = 0.0
    p99: float | None = None


@dataclass(frozen=True, kw_only=True)
class NodeScrape:
    """One aws-node pod's metrics, or why they could not be read."""

    pod: str
    uid: str
    node: str
    families: Mapping[str, Family] = field(default_factory=dict)
    error: str = ""

    def value(self, name: str) -> float:
        family = self.families.get(name)
        return family.value if family is not None else 0.0


def parse(text: str, wanted: Iterable[str] | None = None) -> dict[str, Family]:
    """The families of a Prometheus text exposition (``wanted``: keep only these)."""
    keep = set(wanted) if wanted is not None else None
    families: dict[str, Family] = {}
    for family in text_string_to_metric_families(text):
        if keep is not None and family.name not in keep:
            continue
        total = count = 0.0
        p99: float | None = None
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if family.type == "summary":
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
                elif sample.labels.get("quantile") == "0.99":
                    p99 = sample.value if p99 is None else max(p99, sample.value)
            elif family.type == "histogram":
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
            else:
                total += sample.value
        families[family.name] = Family(type=family.type, value=total, count=count, p99=p99)
    return families


def scrape_cluster(reader: ClusterReader, wanted: Iterable[str] | None = None) -> list[NodeScrape]:
    """Every aws-node pod's metrics; a pod that does not answer is reported with its error, not dropped
    silently (upstream skips it). Raises K8sApiError when the pods cannot be listed."""
    wanted = list(wanted) if wanted is not None else None
    out = []
    for pod in reader.list_pods(namespace=AWS_NODE_NAMESPACE, label_selector=AWS_NODE_SELECTOR):
        try:
            text = reader.proxy_get(namespace=pod.namespace, pod=pod.name, port=METRICS_PORT, path="metrics")
            families = parse(text, wanted)
        except (K8sApiError, ValueError) as exc:
            log.warning("cannot read metrics of %s on %s: %s", pod.name, pod.node_name or "?", exc)
            out.append(NodeScrape(pod=pod.name, uid=pod.uid, node=pod.node_name, error=str(exc)))
            continue
        out.append(NodeScrape(pod=pod.name, uid=pod.uid, node=pod.node_name, families=families))
    return out
