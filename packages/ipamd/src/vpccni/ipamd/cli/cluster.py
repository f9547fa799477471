"""``vpccni cluster``: the whole cluster in one table, from the API server only (no access to the nodes):
per node its CNINode features and what its aws-node's ``/metrics`` says (read through the API server's pod
proxy, as the cni-metrics-helper reads it): ENIs, addresses in the pool, assigned, pods, errors; the
cluster's totals at the bottom."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vpccni.ipamd.metricshelper.scrape import NodeScrape, scrape_cluster
from vpccni.k8sapi.cluster import ClusterReader

ERROR_COUNTERS = ("awscni_ipamd_error_count", "awscni_ec2api_error_count", "awscni_aws_utils_error_count")
WANTED = (
    "awscni_eni_allocated",
    "awscni_eni_max",
    "awscni_total_ip_addresses",
    "awscni_assigned_ip_addresses",
    *ERROR_COUNTERS,
)
HEADERS = ("NODE", "INSTANCE-TYPE", "ENIS", "IPS", "ASSIGNED", "PODS", "ERRORS", "FEATURES", "AWS-NODE")


@dataclass(frozen=True, kw_only=True)
class NodeRow:
    node: str
    instance_type: str
    enis: int | None
    eni_max: int | None
    ips: int | None
    assigned: int | None
    pods: int
    errors: int | None
    features: str
    aws_node: str  # the pod's name, "missing", or why its metrics could not be read

    def cells(self) -> tuple[object, ...]:
        enis = None if self.enis is None else f"{self.enis}/{self.eni_max}"
        return (
            self.node,
            self.instance_type,
            enis,
            self.ips,
            self.assigned,
            self.pods,
            self.errors,
            self.features or None,
            self.aws_node,
        )


def _int(scrape: NodeScrape | None, name: str) -> int | None:
    return None if scrape is None or scrape.error else int(scrape.value(name))


def cluster_rows(reader: ClusterReader) -> list[NodeRow]:
    """One row per node (and one per aws-node pod whose node is unknown); raises K8sApiError."""
    nodes = reader.list_nodes()
    features = {c.name: ",".join(f.name for f in c.features) for c in reader.list_cninodes()}
    pods: dict[str, int] = {}
    for pod in reader.list_pods(namespace=""):
        if pod.node_name and not pod.host_network:  # pods with a VPC address from the node's pool
            pods[pod.node_name] = pods.get(pod.node_name, 0) + 1
    scrapes = {s.node: s for s in scrape_cluster(reader, WANTED)}
    rows = []
    for name in sorted({n.name for n in nodes} | set(scrapes)):
        node = next((n for n in nodes if n.name == name), None)
        scrape = scrapes.get(name)
        errors = None if scrape is None or scrape.error else sum(int(scrape.value(m)) for m in ERROR_COUNTERS)
        rows.append(
            NodeRow(
                node=name,
                instance_type=node.labels.get("node.kubernetes.io/instance-type", "")
                if node
                else "(not a node)",
                enis=_int(scrape, "awscni_eni_allocated"),
                eni_max=_int(scrape, "awscni_eni_max"),
                ips=_int(scrape, "awscni_total_ip_addresses"),
                assigned=_int(scrape, "awscni_assigned_ip_addresses"),
                pods=pods.get(name, 0),
                errors=errors,
                features=features.get(name, ""),
                aws_node="missing"
                if scrape is None
                else (f"unreachable: {scrape.error}" if scrape.error else scrape.pod),
            )
        )
    return rows


def totals(rows: Sequence[NodeRow]) -> NodeRow:
    def total(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    answered = sum(1 for r in rows if r.ips is not None)
    return NodeRow(
        node=f"TOTAL ({len(rows)} nodes)",
        instance_type="",
        enis=total([r.enis for r in rows]),
        eni_max=total([r.eni_max for r in rows]),
        ips=total([r.ips for r in rows]),
        assigned=total([r.assigned for r in rows]),
        pods=sum(r.pods for r in rows),
        errors=total([r.errors for r in rows]),
        features="",
        aws_node=f"{answered}/{len(rows)} answered",
    )
