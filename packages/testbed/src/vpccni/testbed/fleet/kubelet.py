"""The kubelet of a simulated node: once the node is ready, its pods' sandboxes are created, each ADD retried
as kubelet retries a failed sandbox (the same for both pacings).

kubelet's pod worker requeues a pod whose sync failed after `backOffPeriod` (10 s) jittered by up to 50 %
(pkg/kubelet/pod_workers.go, `wait.Jitter(backOffPeriod, 0.5)`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vpccni.ipamd.allocator import Allocation

BACKOFF_S = 10.0
BACKOFF_JITTER = 0.5


@dataclass(frozen=True, kw_only=True)
class PodOutcome:
    node: str
    pod: str
    first_try: float  # monotonic seconds
    done: float  # when the ADD succeeded, or when the pod gave up (ok false)
    attempts: int
    ok: bool
    error: str = ""


def run_pod(
    *,
    node: str,
    pod: str,
    add: Callable[[str], Allocation],
    deadline: float,
    stop: threading.Event,
    rng: random.Random,
) -> PodOutcome:
    """ADD until it succeeds, the deadline passes or the run stops; between tries, kubelet's back-off."""
    first = time.monotonic()
    attempts = 0
    error = ""
    while True:
        attempts += 1
        try:
            add(pod)
            return PodOutcome(
                node=node, pod=pod, first_try=first, done=time.monotonic(), attempts=attempts, ok=True
            )
        except Exception as exc:  # every failed ADD is a FailedCreatePodSandBox event; kubelet retries
            error = f"{type(exc).__name__}: {exc}"
        wait = BACKOFF_S * (1 + BACKOFF_JITTER * rng.random())
        if time.monotonic() + wait > deadline or stop.wait(wait):
            return PodOutcome(
                node=node,
                pod=pod,
                first_try=first,
                done=time.monotonic(),
                attempts=attempts,
                ok=False,
                error=error,
            )
