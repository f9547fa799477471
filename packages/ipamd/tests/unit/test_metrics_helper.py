"""cni-metrics-helper: parse, aggregate as upstream's table says (per-pod counter increases), publish to
CloudWatch in batches of 20 with the CLUSTER_ID dimension, settings errors that say what to set."""

from __future__ import annotations

import datetime

import pytest
from prometheus_client import generate_latest
from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.ipamd.metricshelper import settings
from vpccni.ipamd.metricshelper.aggregate import Aggregator, Datum
from vpccni.ipamd.metricshelper.cloudwatch import CloudWatchPublisher
from vpccni.ipamd.metricshelper.main import Helper, cluster_id_from_tags
from vpccni.ipamd.metricshelper.prometheus import PrometheusExport
from vpccni.ipamd.metricshelper.scrape import METRICS_PORT, NodeScrape, parse, scrape_cluster
from vpccni.ipamd.metricshelper.table import METRIC_TABLE, PROMETHEUS_GAUGES
from vpccni.ipamd.metricshelper.testing import FakeMetricDataSink
from vpccni.k8sapi.model import PodInfo
from vpccni.k8sapi.testing import FakeCluster

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def node_metrics(*, total: int, assigned: int, adds: int, latency_ms: tuple[float, ...] = ()) -> str:
    m = IpamdMetrics(with_process_metrics=False)
    m.total_ip_addresses.set(total)
    m.assigned_ip_addresses.set(assigned)
    m.eni_allocated.set(1)
    m.add_ip_req_count.inc(adds)
    for ms in latency_ms:
        m.aws_api_latency_ms.labels(api="AssignPrivateIpAddresses", error="false", status="200").observe(ms)
    return m.render().decode()


def scrape(uid: str, text: str) -> NodeScrape:
    return NodeScrape(pod=f"aws-node-{uid}", uid=uid, node=f"n-{uid}", families=parse(text))


def by_name(datums: tuple[Datum, ...]) -> dict[str, float]:
    return {d.name: d.value for d in datums}


def test_every_upstream_metric_is_one_ipamd_exports() -> None:
    exported = {f.name for f in IpamdMetrics(with_process_metrics=False).registry.collect()}
    assert {c.metric for c in METRIC_TABLE} <= exported
    assert set(PROMETHEUS_GAUGES) <= exported
    assert len({c.cloudwatch for c in METRIC_TABLE}) == 20


def test_gauges_sum_and_counters_become_increases_per_pod() -> None:
    agg = Aggregator()
    first = agg.round(
        [
            scrape("a", node_metrics(total=10, assigned=2, adds=5)),
            scrape("b", node_metrics(total=6, assigned=1, adds=7)),
        ]
    )
    values = by_name(first.datums)
    assert (values["totalIPAddresses"], values["assignIPAddresses"], values["eniAllocated"]) == (16, 3, 2)
    assert values["addReqCount"] == 0  # the first sight of a pod is its baseline
    assert first.gauges["awscni_total_ip_addresses"] == 16

    # a: +3; b restarted (7 -> 2): its 2 are new; c joined: baseline.
    second = agg.round(
        [
            scrape("a", node_metrics(total=10, assigned=5, adds=8)),
            scrape("b", node_metrics(total=6, assigned=1, adds=2)),
            scrape("c", node_metrics(total=4, assigned=0, adds=100)),
        ]
    )
    assert by_name(second.datums)["addReqCount"] == 5
    # b left: no drop, no spike.
    third = agg.round(
        [
            scrape("a", node_metrics(total=10, assigned=5, adds=9)),
            scrape("c", node_metrics(total=4, assigned=0, adds=100)),
        ]
    )
    assert by_name(third.datums)["addReqCount"] == 1


def test_api_latency_is_the_largest_nodes_interval_mean() -> None:
    agg = Aggregator()
    agg.round(
        [
            scrape("a", node_metrics(total=1, assigned=0, adds=0, latency_ms=(10,))),
            scrape("b", node_metrics(total=1, assigned=0, adds=0)),
        ]
    )
    result = agg.round(
        [
            scrape("a", node_metrics(total=1, assigned=0, adds=0, latency_ms=(10, 30, 50))),  # +30, +50
            scrape("b", node_metrics(total=1, assigned=0, adds=0, latency_ms=(100,))),
        ]
    )
    assert by_name(result.datums)["awsAPILatency"] == 100.0
    go_summary = (
        '# TYPE awscni_aws_api_latency_ms summary\nawscni_aws_api_latency_ms{api="x",quantile="0.99"} 77\n'
    )
    assert parse(go_summary)["awscni_aws_api_latency_ms"].p99 == 77


def test_scrape_reports_pods_that_do_not_answer() -> None:
    fake = FakeCluster()
    fake.pods = [
        PodInfo(
            namespace="kube-system",
            name="aws-node-a",
            uid="a",
            node_name="n1",
            labels={"k8s-app": "aws-node"},
        ),
        PodInfo(
            namespace="kube-system",
            name="aws-node-b",
            uid="b",
            node_name="n2",
            labels={"k8s-app": "aws-node"},
        ),
        PodInfo(namespace="kube-system", name="coredns", uid="c", labels={"k8s-app": "kube-dns"}),
    ]
    fake.serve(
        namespace="kube-system",
        pod="aws-node-a",
        port=METRICS_PORT,
        path="metrics",
        body=node_metrics(total=3, assigned=1, adds=0),
    )
    scrapes = scrape_cluster(fake)
    assert [(s.pod, bool(s.error)) for s in scrapes] == [("aws-node-a", False), ("aws-node-b", True)]
    assert "503" in scrapes[1].error
    result = Aggregator().round(scrapes)
    assert (result.targets, result.failed, by_name(result.datums)["totalIPAddresses"]) == (2, 1, 3)


def test_publisher_batches_of_20_with_the_cluster_dimension() -> None:
    sink = FakeMetricDataSink()
    publisher = CloudWatchPublisher(sink, cluster_id="prod", now=lambda: NOW)
    publisher.publish([Datum(name=f"m{i}", value=i) for i in range(45)])
    assert publisher.flush() == 45
    assert [len(data) for _, data in sink.calls] == [20, 20, 5]
    namespace, data = sink.calls[0]
    assert namespace == "Kubernetes"
    assert data[0] == {
        "MetricName": "m0",
        "Dimensions": [{"Name": "CLUSTER_ID", "Value": "prod"}],
        "Value": 0.0,
        "Unit": "Count",
        "Timestamp": NOW,
    }
    assert publisher.flush() == 0


def test_a_failed_publish_is_logged_with_the_permission_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    class Denied(Exception):
        response = {"Error": {"Code": "AccessDenied"}}

    sink = FakeMetricDataSink()
    sink.fail_with = Denied("not authorized to perform cloudwatch:PutMetricData")
    publisher = CloudWatchPublisher(sink, cluster_id="c")
    publisher.publish([Datum(name="x", value=1)])
    assert publisher.flush() == 0
    assert "cloudwatch:PutMetricData" in caplog.text and "iam-policy-metrics-helper.json" in caplog.text
    sink.fail_with = None
    assert publisher.flush() == 0 and sink.calls == []


def test_helper_rounds_publish_every_second_round_and_feed_prometheus() -> None:
    fake = FakeCluster()
    fake.pods = [PodInfo(namespace="kube-system", name="aws-node-a", uid="a", labels={"k8s-app": "aws-node"})]
    fake.serve(
        namespace="kube-system",
        pod="aws-node-a",
        port=METRICS_PORT,
        path="metrics",
        body=node_metrics(total=8, assigned=3, adds=1),
    )
    sink, export = FakeMetricDataSink(), PrometheusExport()
    helper = Helper(
        reader=fake, interval_s=1, publisher=CloudWatchPublisher(sink, cluster_id="c"), prometheus=export
    )
    helper.tick()
    assert sink.calls == []
    helper.tick()
    assert sink.values("totalIPAddresses") == [8.0, 8.0]
    text = parse(generate_latest(export.registry).decode())
    assert text["awscni_total_ip_addresses"].value == 8 and text["awscni_assigned_ip_addresses"].value == 3
    fake.available = False
    assert helper.tick() is None  # the API server is away: no round, no crash


def test_cluster_id_from_instance_tags_in_upstreams_order() -> None:
    assert cluster_id_from_tags({"Name": "n", "eks:cluster-name": "prod"}) == "prod"
    assert cluster_id_from_tags({"Name": "n", "CLUSTER_ID": "c"}) == "c"
    assert cluster_id_from_tags({}) == "k8s-cluster"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"METRIC_UPDATE_INTERVAL": "0"},
            "METRIC_UPDATE_INTERVAL='0' must be a whole number of seconds, at least 1",
        ),
        ({"USE_CLOUDWATCH": "maybe"}, "USE_CLOUDWATCH='maybe' is not a boolean"),
        ({"USE_CLOUDWATCH": "false"}, "both false"),
        (
            {"VPCCNI_METRICS_HELPER_BIND_ADDRESS": "61681"},
            "VPCCNI_METRICS_HELPER_BIND_ADDRESS='61681': expected host:port",
        ),
        ({"AWS_VPC_K8S_CNI_LOGLEVEL": "loud"}, "AWS_VPC_K8S_CNI_LOGLEVEL='loud'"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(settings.HelperSettingsError, match=message.replace("(", r"\(")):
        settings.load(env)


def test_settings_defaults_are_upstreams() -> None:
    loaded = settings.load({})
    assert (loaded.use_cloudwatch, loaded.use_prometheus, loaded.interval_s, loaded.publish_interval_s) == (
        True,
        False,
        30,
        60,
    )
    assert loaded.bind_address == ":61681" and loaded.cluster_id == ""
    assert settings.load({"USE_CLOUDWATCH": "no", "USE_PROMETHEUS": "YES"}).use_prometheus


def test_endpoints_are_read_as_ipamd_reads_them() -> None:
    """The helper finds IMDS, EC2 and the API server through ipamd's registry entries, with their rules."""
    s = settings.load(
        {
            "CLUSTER_ENDPOINT": "https://10.0.0.1:6443",
            "KUBERNETES_SERVICE_HOST": "10.100.0.1",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1338/",
            "AWS_EC2_ENDPOINT": "http://127.0.0.1:5000",
        }
    )
    assert s.kube.cluster_endpoint == "https://10.0.0.1:6443" and s.kube.service_host == "10.100.0.1"
    assert (s.imds_endpoint, s.ec2_endpoint, s.http_timeout_s) == (
        "http://127.0.0.1:1338",
        "http://127.0.0.1:5000",
        10,
    )
    with pytest.raises(settings.HelperSettingsError, match="HTTP_TIMEOUT"):
        settings.load({"HTTP_TIMEOUT": "3"})
