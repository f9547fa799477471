"""``cni-metrics-helper``: every METRIC_UPDATE_INTERVAL seconds, scrape every aws-node through the API
server, aggregate, and publish (CloudWatch every second round; Prometheus at once). Wired here; the
parts take their dependencies, so tests drive them with the fakes of ``metricshelper.testing``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from vpccni.ipamd.metricshelper import settings as helper_settings
from vpccni.ipamd.metricshelper.aggregate import Aggregator, RoundResult
from vpccni.ipamd.metricshelper.cloudwatch import CloudWatchPublisher, make_client
from vpccni.ipamd.metricshelper.prometheus import PrometheusExport
from vpccni.ipamd.metricshelper.scrape import scrape_cluster
from vpccni.ipamd.metricshelper.table import METRIC_TABLE
from vpccni.k8sapi.cluster import ClusterReader
from vpccni.k8sapi.errors import K8sApiError

log = logging.getLogger("cni-metrics-helper")

DEFAULT_CLUSTER_ID = "k8s-cluster"
CLUSTER_ID_TAGS = ("eks:cluster-name", "CLUSTER_ID", "Name")  # upstream's order


class Helper:
    """One scrape-aggregate-publish round per ``tick()``; ``run()`` ticks until ``stop()``."""

    def __init__(
        self,
        *,
        reader: ClusterReader,
        interval_s: float,
        publisher: CloudWatchPublisher | None = None,
        prometheus: PrometheusExport | None = None,
    ) -> None:
        self._reader = reader
        self._aggregator = Aggregator()
        self._publisher = publisher
        self._prometheus = prometheus
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.rounds = 0

    def tick(self) -> RoundResult | None:
        try:
            scrapes = scrape_cluster(self._reader, [c.metric for c in METRIC_TABLE])
        except K8sApiError as exc:
            log.warning("cannot list the aws-node pods: %s", exc)
            return None
        result = self._aggregator.round(scrapes)
        self.rounds += 1
        log.info("scraped %d aws-node pods (%d failed)", result.targets, result.failed)
        if self._publisher is not None:
            self._publisher.publish(result.datums)
            if self.rounds % 2 == 0:  # CloudWatch every 2 intervals, as upstream
                self._publisher.flush()
        if self._prometheus is not None:
            self._prometheus.update(result.gauges, targets=result.targets, failed=result.failed)
        return result

    def run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.tick()
        if self._publisher is not None:
            self._publisher.flush()

    def stop(self) -> None:
        self._stop.set()


def cluster_id_from_tags(tags: Mapping[str, str]) -> str:
    return next((tags[t] for t in CLUSTER_ID_TAGS if tags.get(t)), DEFAULT_CLUSTER_ID)


def _instance_identity(
    settings: helper_settings.HelperSettings,
) -> tuple[str, Callable[[], Mapping[str, str]]]:
    """This instance's region (IMDS) and a reader of its EC2 tags, for when AWS_REGION or AWS_CLUSTER_ID
    are not set."""
    from vpccni.awsutils.ec2api import Boto3EC2Api, Ec2ClientConfig
    from vpccni.awsutils.imds import ImdsConfig, ImdsHttpClient, InstanceMetadata

    metadata = InstanceMetadata(ImdsHttpClient(ImdsConfig(endpoint=settings.imds_endpoint)))
    region = settings.region or metadata.region()

    def tags() -> Mapping[str, str]:
        client = Ec2ClientConfig(
            region=region, endpoint_url=settings.ec2_endpoint or None, http_timeout_s=settings.http_timeout_s
        )
        ec2 = Boto3EC2Api(client)
        instance = ec2.describe_instance(metadata.instance_id())
        return {t.get("Key", ""): t.get("Value", "") for t in instance.get("Tags") or []}

    return region, tags


def main(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    try:
        settings = helper_settings.load(env)
    except helper_settings.HelperSettingsError as exc:
        print(f"cni-metrics-helper: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, settings.log_level.replace("WARN", "WARNING").replace("FATAL", "CRITICAL")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    from vpccni.k8sapi.cluster import KubernetesCluster
    from vpccni.k8sapi.config import load_config

    try:
        reader = KubernetesCluster(load_config(settings.kube))
    except FileNotFoundError as exc:
        print(f"cni-metrics-helper: {exc}", file=sys.stderr)
        return 2
    publisher = None
    if settings.use_cloudwatch:
        region, cluster_id = settings.region, settings.cluster_id
        if not region or not cluster_id:
            try:
                region, tags = _instance_identity(settings)
                cluster_id = cluster_id or cluster_id_from_tags(tags())
            except Exception as exc:  # IMDS blocked, no ec2:DescribeInstances: say what to set instead
                if not region:
                    print(
                        f"cni-metrics-helper: no AWS_REGION and IMDS cannot tell it ({exc}): set AWS_REGION",
                        file=sys.stderr,
                    )
                    return 2
                log.warning(
                    "cannot read the instance's tags (%s): set AWS_CLUSTER_ID; using %s",
                    exc,
                    DEFAULT_CLUSTER_ID,
                )
                cluster_id = cluster_id or DEFAULT_CLUSTER_ID
        publisher = CloudWatchPublisher(make_client(region), cluster_id=cluster_id)
        log.info("publishing to CloudWatch in %s with CLUSTER_ID=%s", region, cluster_id)
    prometheus = None
    if settings.use_prometheus:
        prometheus = PrometheusExport()
        prometheus.server.start(settings.bind_address)
        log.info("serving Prometheus metrics on %s", prometheus.server.address)
    helper = Helper(reader=reader, interval_s=settings.interval_s, publisher=publisher, prometheus=prometheus)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        helper.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "cni-metrics-helper started: every %d s, CloudWatch %s, Prometheus %s",
        settings.interval_s,
        settings.use_cloudwatch,
        settings.use_prometheus,
    )
    try:
        helper.run()
    finally:
        if prometheus is not None:
            prometheus.server.stop()
        reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
