"""The CNI service with each request timed into ``vpccni_cni_request_duration_seconds{command,result}``, so
the service itself stays metric-free (as the pool's ports are in ``adapters/observed.py``)."""

from __future__ import annotations

import time
from typing import Any

from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.metrics import IpamdMetrics


class ObservedCniService(CniService):
    def __init__(self, *, metrics: IpamdMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    def handle(self, request: Request, netns_fd: int | None, *, answer_by: float | None = None) -> object:
        started, ok = time.monotonic(), False
        try:
            result = super().handle(request, netns_fd, answer_by=answer_by)
            ok = True
            return result
        finally:
            self._metrics.observe_cni(request.command, time.monotonic() - started, ok=ok)
