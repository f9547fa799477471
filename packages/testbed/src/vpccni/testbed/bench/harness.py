"""What every benchmark needs: a cluster with realistic EC2/IMDS latency, a node running the real agent,
pods added and deleted through the real shim (retried as kubelet retries), and a sampler of the pool."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpccni.testbed.cloud import Cloud
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.demo.report import is_mutating
from vpccni.testbed.noderunner import NodeRunner, Pod


def tmpfs_dir(*, prefix: str) -> Path | None:
    """A fresh directory on the machine's tmpfs (/dev/shm), or None when there is none: sockets and
    checkpoints live on a tmpfs on a node (/var/run/aws-node)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            on_tmpfs = any(f.split()[1:3] == ["/dev/shm", "tmpfs"] for f in mounts if f.strip())
    except OSError:
        return None
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm")) if on_tmpfs else None


@dataclass(frozen=True, kw_only=True)
class Latency:
    """Injected EC2 latency per action and IMDS propagation lag, in seconds. Prefixes are assigned through
    AssignPrivateIpAddresses (Ipv4PrefixCount), so its latency covers prefix delegation too."""

    create_eni: float = 0.5
    attach_eni: float = 0.75
    assign_ips: float = 0.5
    imds_lag: float = 1.0

    def apply(self, cluster: Cluster) -> None:
        self.apply_to(cluster.cloud)

    def apply_to(self, cloud: Cloud) -> None:
        cloud.set_latency("CreateNetworkInterface", self.create_eni)
        cloud.set_latency("AttachNetworkInterface", self.attach_eni)
        cloud.set_latency("AssignPrivateIpAddresses", self.assign_ips)
        cloud.set_imds_lag(self.imds_lag)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (no interpolation), None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def ec2_phases(cluster: Cluster, since: float, until: float) -> dict[str, float]:
    """When the burst's ENI work happened, in seconds from `since` (wall clock) up to `until`: the first
    CreateNetworkInterface started, the last ended, the first AttachNetworkInterface started, the last
    attach (and its DeleteOnTermination modify) ended."""
    calls = [r for r in cluster.cloud.call_log if since <= r.started <= until and r.error_code is None]

    def edge(action: str, pick: Callable[[Sequence[float]], float], end: bool) -> float | None:
        times = [r.started + (r.duration if end else 0.0) - since for r in calls if r.action == action]
        return round(pick(times), 3) if times else None

    found = {
        "first_create_start": edge("CreateNetworkInterface", min, False),
        "last_create_end": edge("CreateNetworkInterface", max, True),
        "first_attach_start": edge("AttachNetworkInterface", min, False),
        "last_attach_end": edge("AttachNetworkInterface", max, True),
        "last_modify_end": edge("ModifyNetworkInterfaceAttribute", max, True),
        "first_assign_start": edge("AssignPrivateIpAddresses", min, False),
        "last_assign_end": edge("AssignPrivateIpAddresses", max, True),
    }
    return {k: v for k, v in found.items() if v is not None}


def mutating_calls_since(cluster: Cluster, since: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in cluster.cloud.call_log:
        if record.started >= since and is_mutating(record.action):
            counts[record.action] = counts.get(record.action, 0) + 1
    return counts


@dataclass(frozen=True, kw_only=True)
class AddResult:
    pod: Pod
    ip: ipaddress.IPv4Address | None
    seconds: float  # from the first attempt to success (or to giving up)
    attempts: int
    error: str = ""
    started: float = 0.0  # monotonic: the first attempt


def add_with_retry(runner: NodeRunner, pod: Pod, *, attempts: int = 6, backoff_s: float = 0.5) -> AddResult:
    """ADD as kubelet drives it: on failure DEL, wait, try again."""
    started = time.monotonic()
    error = ""
    for attempt in range(1, attempts + 1):
        outcome = runner.add(pod)
        if outcome.ok:
            address = outcome.document["ips"][0]["address"]
            ip = ipaddress.IPv4Interface(address).ip
            return AddResult(
                pod=pod, ip=ip, seconds=time.monotonic() - started, attempts=attempt, started=started
            )
        error = outcome.error
        runner.delete(pod)
        time.sleep(backoff_s * attempt)
    return AddResult(
        pod=pod, ip=None, seconds=time.monotonic() - started, attempts=attempts, error=error, started=started
    )


def add_many(runner: NodeRunner, names: Sequence[str], *, workers: int) -> list[AddResult]:
    pods = [runner.create_pod(namespace="bench", name=n) for n in names]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: add_with_retry(runner, p), pods))


def delete_all(runner: NodeRunner, *, workers: int = 8) -> list[str]:
    """DEL every pod of the runner and remove its namespace; returns the errors."""

    def one(pod: Pod) -> str:
        outcome = runner.delete(pod)
        runner.remove_pod(pod)
        return "" if outcome.ok else f"{pod.name}: {outcome.error}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return [e for e in pool.map(one, runner.pods()) if e]


def wait_pool(
    runner: NodeRunner, *, min_free: int = 0, timeout_s: float = 90.0, settle_s: float = 6.0
) -> dict[str, Any]:
    """Wait until the pool has `min_free` addresses available, is not growing, and its size stayed put for
    `settle_s` (longer than the pool manager's 5 s interval: a decision it has yet to make is not missed)."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, int] | None = None
    stable_since = time.monotonic()
    pool: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pool = runner.introspect("/v1/pool")
        size = (int(pool.get("totalIPs", 0)), int(pool.get("enis", 0)))
        if size != last:
            last, stable_since = size, time.monotonic()
        elif (
            pool.get("state") != "growing"
            # Addresses in cooldown count as available (as upstream) but no ADD gets them yet.
            and int(pool.get("availableIPs", 0)) - int(pool.get("inCooldown", 0)) >= min_free
            and time.monotonic() - stable_since >= settle_s
        ):
            return pool
        time.sleep(0.2)
    return pool


@dataclass(kw_only=True)
class PoolSampler:
    """Samples `/v1/pool` every `interval_s` on a thread: (t, total addresses, assigned, ENIs)."""

    runner: NodeRunner
    interval_s: float = 0.1
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self) -> PoolSampler:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="pool-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a slow answer under load only costs a sample
                pool = self.runner.introspect("/v1/pool")
                self.samples.append(
                    (
                        time.monotonic() - self._t0,
                        int(pool.get("totalIPs", 0)),
                        int(pool.get("assignedIPs", 0)),
                        int(pool.get("enis", 0)),
                    )
                )
            self._stop.wait(self.interval_s)

    def stop(self) -> list[tuple[float, int, int, int]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.samples


@contextlib.contextmanager
def bench_node(
    *,
    workdir: Path,
    shim: Path,
    latency: Latency,
    instance_type: str,
    env: Mapping[str, str] | None = None,
    start: bool = True,
    state_dir: Path | None = None,
    cluster_config: ClusterConfig | None = None,
) -> Iterator[tuple[Cluster, NodeRunner]]:
    """A fresh cluster with latency injected and one node running the agent; everything removed after."""
    cluster = Cluster(cluster_config)
    cluster.start()
    runner: NodeRunner | None = None
    try:
        latency.apply(cluster)
        node = cluster.add_node(instance_type=instance_type)
        name = f"{node.name}-{int(time.time() * 1000)}"
        runner = NodeRunner(
            node=node,
            workdir=workdir / name,
            shim=shim,
            env=env,
            state_dir=state_dir / name if state_dir else None,
        )
        if start:
            runner.start(timeout_s=120)
        yield cluster, runner
    finally:
        try:
            if runner is not None:
                runner.close()
        finally:
            cluster.stop()
