"""The real cni-metrics-helper against two nodes running the real aws-k8s-agent: it finds the aws-node pods
through the testbed API server, scrapes them through its pod proxy, and the cluster's datapoints are read
back from the testbed's CloudWatch with boto3's get_metric_data (and from its Prometheus endpoint)."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from vpccni.ipamd.metricshelper.scrape import parse
from vpccni.ipamd.metricshelper.table import METRIC_TABLE
from vpccni.testbed.cluster import Cluster

if TYPE_CHECKING:
    from conftest import Agent

CLUSTER_ID = "testbed-it"
DIMENSIONS = [{"Name": "CLUSTER_ID", "Value": CLUSTER_ID}]


@pytest.fixture
def agents(cluster: Cluster, agent_on: Callable[..., Agent]) -> Iterator[list[Agent]]:
    nodes = [cluster.add_node(instance_type="m5.large") for _ in range(2)]
    try:
        started = [agent_on(node) for node in nodes]
        for node in nodes:
            cluster.register_aws_node(node)
        yield started
    finally:
        for agent in locals().get("started", []):
            agent.stop(signal.SIGKILL, timeout_s=10)
        for node in nodes:
            cluster.remove_node(node)


@pytest.fixture
def helper(
    cluster: Cluster, agents: list[Agent], tmp_path: Path, wait_for: Callable[..., Any]
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    assert cluster.kube is not None
    env = {
        "PATH": os.environ.get("PATH", ""),
        **cluster.cloud.client_env(),
        "CLUSTER_ENDPOINT": cluster.kube.url,
        "AWS_CLUSTER_ID": CLUSTER_ID,
        "USE_CLOUDWATCH": "true",
        "USE_PROMETHEUS": "true",
        "METRIC_UPDATE_INTERVAL": "1",
        "VPCCNI_METRICS_HELPER_BIND_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    script = Path(sys.executable).parent / "cni-metrics-helper"
    log = tmp_path / "helper.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(script)], env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        address = wait_for(
            lambda: (m := re.search(r"serving Prometheus metrics on (\S+)", log.read_text())) and m.group(1),
            timeout_s=30,
            what=f"the helper's Prometheus endpoint (log: {log})",
        )
        yield proc, address
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def datapoints(cw: Any, name: str, stat: str, since: datetime.datetime) -> list[float]:
    now = datetime.datetime.now(datetime.UTC)
    result = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {"Namespace": "Kubernetes", "MetricName": name, "Dimensions": DIMENSIONS},
                    "Period": 3600,
                    "Stat": stat,
                },
            }
        ],
        StartTime=since,
        EndTime=now + datetime.timedelta(minutes=1),
    )
    return list(result["MetricDataResults"][0]["Values"])


def node_value(agent: Agent, name: str) -> float:
    return parse(agent.metrics(), [name])[name].value


def test_cluster_metrics_reach_cloudwatch_and_prometheus(
    tmp_path: Path,
    cluster: Cluster,
    agents: list[Agent],
    helper: tuple[subprocess.Popen[str], str],
    wait_for: Callable[..., Any],
) -> None:
    proc, address = helper
    cw = cluster.cloud.cloudwatch_client()
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

    # Every metric of upstream's table is published, with upstream's namespace and dimension.
    def published() -> set[str]:
        metrics = cw.list_metrics(Namespace="Kubernetes", Dimensions=DIMENSIONS)["Metrics"]
        return {m["MetricName"] for m in metrics}

    wait_for(lambda: published() >= {c.cloudwatch for c in METRIC_TABLE}, timeout_s=60, what="all 20 metrics")
    assert proc.poll() is None

    # Counters are increases: ADDs made now, on both nodes, add up in CloudWatch to exactly their number.
    before = sum(datapoints(cw, "addReqCount", "Sum", since))
    for i in range(3):
        agents[0].add_ok(f"a{i}")
    for i in range(2):
        agents[1].add_ok(f"b{i}")
    wait_for(
        lambda: sum(datapoints(cw, "addReqCount", "Sum", since)) - before == 5,
        timeout_s=60,
        what="5 more addReqCount in CloudWatch",
    )

    # Gauges are the sum over the nodes; once the pools settle, the latest datapoint equals that sum.
    def settled() -> bool:
        want = sum(node_value(a, "awscni_assigned_ip_addresses") for a in agents)
        latest = datapoints(
            cw,
            "assignIPAddresses",
            "Maximum",
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=3),
        )
        return want == 5 and bool(latest) and latest[-1] == want

    wait_for(settled, timeout_s=60, what="assignIPAddresses = the nodes' sum (5)")

    def prometheus_matches() -> bool:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
            families = parse(resp.read().decode())
        want = sum(node_value(a, "awscni_total_ip_addresses") for a in agents)
        return (
            families["awscni_total_ip_addresses"].value == want
            and families["vpccni_metrics_helper_targets"].value == 2
        )

    wait_for(prometheus_matches, timeout_s=30, what="the Prometheus re-export to equal the nodes' sum")

    # It scraped through the API server's pod proxy, as upstream does.
    assert cluster.kube is not None
    assert any("/proxy/metrics" in path for _, path in cluster.kube.request_log)

    # The operator's view of the same cluster, from the API server alone.
    kubeconfig = cluster.kube.write_kubeconfig(tmp_path / "kubeconfig")
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "vpccni"), "cluster", "--kubeconfig", str(kubeconfig), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    view = json.loads(cli.stdout)
    rows = {r["node"]: r for r in view["nodes"]}
    for agent in agents:
        row = rows[agent.node.k8s_node_name]
        assert row["ips"] == node_value(agent, "awscni_total_ip_addresses")
        assert row["enis"] == node_value(agent, "awscni_eni_allocated") and row["aws_node"].startswith(
            "aws-node-"
        )
    assert view["total"]["assigned"] == 5
