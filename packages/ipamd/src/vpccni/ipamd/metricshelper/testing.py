"""A stateful CloudWatch sink for tests of the helper. Product code never imports this module."""

from __future__ import annotations

from typing import Any


class FakeMetricDataSink:
    """Records every PutMetricData call; ``fail_with`` makes the next calls raise it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail_with: Exception | None = None

    def put_metric_data(self, *, Namespace: str, MetricData: list[dict[str, Any]]) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append((Namespace, list(MetricData)))
        return {}

    def values(self, name: str) -> list[float]:
        return [d["Value"] for _, data in self.calls for d in data if d["MetricName"] == name]
