"""Publishing to CloudWatch as upstream's ``pkg/publisher`` does: namespace ``Kubernetes``, one dimension
``CLUSTER_ID``, datapoints buffered and sent every publish interval in PutMetricData calls of at most 20.

The client is botocore's ``cloudwatch`` client (it honours ``AWS_ENDPOINT_URL_CLOUDWATCH``, which the
testbed sets); ``MetricDataSink`` is the seam, with a stateful fake in ``metricshelper.testing``.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from vpccni.ipamd.metricshelper.aggregate import Datum

log = logging.getLogger(__name__)

NAMESPACE = "Kubernetes"
CLUSTER_ID_DIMENSION = "CLUSTER_ID"
MAX_DATUMS_PER_CALL = 20
MAX_BUFFERED = 10_000  # a long CloudWatch outage drops the oldest datapoints, never grows without bound


class MetricDataSink(Protocol):
    def put_metric_data(self, *, Namespace: str, MetricData: list[dict[str, Any]]) -> Any: ...


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CloudWatchPublisher:
    def __init__(
        self,
        sink: MetricDataSink,
        *,
        cluster_id: str,
        namespace: str = NAMESPACE,
        now: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        self._sink = sink
        self._dimensions = [{"Name": CLUSTER_ID_DIMENSION, "Value": cluster_id}]
        self._namespace = namespace
        self._now = now
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.sent_calls = 0

    def publish(self, datums: Sequence[Datum]) -> None:
        """Buffer one round's datapoints, stamped now (``flush`` sends them)."""
        stamp = self._now()
        with self._lock:
            self._buffer.extend(
                {
                    "MetricName": d.name,
                    "Dimensions": self._dimensions,
                    "Value": float(d.value),
                    "Unit": d.unit,
                    "Timestamp": stamp,
                }
                for d in datums
            )
            del self._buffer[:-MAX_BUFFERED]

    def flush(self) -> int:
        """Send what is buffered; returns the datapoints CloudWatch accepted. A failed call is logged with
        what to do and its datapoints are dropped (as upstream does): metrics are best effort."""
        with self._lock:
            pending, self._buffer = self._buffer, []
        sent = 0
        for start in range(0, len(pending), MAX_DATUMS_PER_CALL):
            batch = pending[start : start + MAX_DATUMS_PER_CALL]
            try:
                self._sink.put_metric_data(Namespace=self._namespace, MetricData=batch)
            except Exception as exc:  # botocore's ClientError, endpoint and credential errors alike
                log.warning("cannot publish %d datapoints to CloudWatch: %s%s", len(batch), exc, _hint(exc))
                continue
            self.sent_calls += 1
            sent += len(batch)
        return sent


def _hint(exc: Exception) -> str:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
        return " (grant cloudwatch:PutMetricData to its role: deploy/iam-policy-metrics-helper.json)"
    return ""


def make_client(region: str) -> Any:
    """botocore's CloudWatch client for ``region`` (endpoint from AWS_ENDPOINT_URL_CLOUDWATCH when set)."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "cloudwatch",
        region_name=region,
        config=Config(retries={"mode": "standard", "total_max_attempts": 10}),
    )
