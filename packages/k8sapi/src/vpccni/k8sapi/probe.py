"""API-server connectivity check at start-up (docs/design/upstream-contract.md §1)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from vpccni.k8sapi.errors import ApiUnavailable
from vpccni.k8sapi.model import VersionInfo
from vpccni.k8sapi.protocol import KubeApi

log = logging.getLogger(__name__)


def wait_until_reachable(
    api: KubeApi,
    *,
    poll_interval_s: float,
    request_timeout_s: float = 5.0,
    give_up_after_s: float | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> VersionInfo | None:
    """Poll ``GET /version`` until it answers. Returns the version, or None when ``give_up_after_s`` passed
    (or ``stop`` was set) first; ``give_up_after_s=None`` waits forever (upstream blocks like this when
    security groups for pods, custom networking or ANNOTATE_POD_IP need the API server).

    Only unavailability is retried: an authorization or other API error is raised at once, because
    waiting will not fix it."""
    stop = stop or threading.Event()
    deadline = None if give_up_after_s is None else clock() + give_up_after_s
    attempt = 0
    while True:
        attempt += 1
        try:
            version = api.server_version(timeout_s=request_timeout_s)
            log.info("Kubernetes API server reachable (%s) after %d attempt(s)", version.git_version, attempt)
            return version
        except ApiUnavailable as exc:
            log.warning("Kubernetes API server not reachable yet (attempt %d): %s", attempt, exc)
        if deadline is not None and clock() + poll_interval_s > deadline:
            return None
        if stop.wait(poll_interval_s):
            return None
