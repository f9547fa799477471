"""One fleet run: an account's EC2 (the published per-action buckets), N instances, and N agents in a few
worker processes joining over the join window; returns what happened, for `figures`.

The coordinator process hosts the testbed's EC2 and one IMDS gateway for every instance; the agents run in
`workers` processes (`vpccni.testbed.fleet.worker`), so EC2's handling and the agents' Python do not share
one interpreter lock.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vpccni.testbed.bench.harness import Latency
from vpccni.testbed.cloud import CNI_ROLE_TAG, Cloud, CloudConfig, SubnetSpec
from vpccni.testbed.ec2.calllog import CallRecord
from vpccni.testbed.ec2.throttle import CATEGORIES, EC2_DEFAULT_BUCKETS
from vpccni.testbed.fleet.pacing import Pacing
from vpccni.testbed.fleet.worker import rss_mib
from vpccni.testbed.imds.gateway import ImdsGateway

log = logging.getLogger(__name__)

# Two /17s: room for a thousand nodes of 4 ENIs x 15 addresses.
FLEET_SUBNETS = (
    SubnetSpec(cidr=ipaddress.IPv4Network("10.0.0.0/17")),
    SubnetSpec(cidr=ipaddress.IPv4Network("10.0.128.0/17"), tags={CNI_ROLE_TAG: "1"}),
)
START_MARGIN_S = 3.0  # between handing out the jobs and the first join
# The agents' EC2 read timeout (upstream's HTTP_TIMEOUT, default 10 s). One Python process plays EC2 for the
# whole fleet on a shared 2-core machine and can answer slower than EC2 ever does; a call it answered late
# must not become a client retry of a call it is still working on (with hundreds of clients that snowballs
# into minutes-long answers: a collapse of the simulator, not of EC2). Both pacings get the same.
SIMULATOR_HTTP_TIMEOUT_S = "60"


@dataclass(frozen=True, kw_only=True)
class FleetPlan:
    nodes: int = 200
    pods_per_node: int = 30
    join_s: float = 60.0
    instance_type: str = "m5.xlarge"
    workers: int = 2
    latency: Latency = field(default_factory=Latency)
    settle_s: float = 20.0  # after the last pod has its address, the pools finish their warm targets
    pod_timeout_s: float = 600.0  # a pod without an address this long after its node joined has failed
    seed: int = 0


@dataclass(kw_only=True)
class RunData:
    pacing: Pacing
    plan: FleetPlan
    t0: float  # monotonic: the first join
    t0_wall: float
    end: float = 0.0  # monotonic: workers told to stop
    ready: list[dict[str, Any]] = field(default_factory=list)
    failed_nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    coordinator_rss_mib: float = 0.0  # at the end
    coordinator_base_mib: float = 0.0  # before the instances were launched
    instances_launched_s: float = 0.0


class _WorkerProcess:
    def __init__(self, job: dict[str, Any], sink: _Sink) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vpccni.testbed.fleet.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        self._reader = threading.Thread(target=sink.read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("fleet worker %d did not stop; killing it", self.proc.pid)
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)


class _Sink:
    """Collects the workers' events; `settled` is set once every pod has an outcome."""

    def __init__(self, data: RunData, expected_pods: int, expected_nodes: int) -> None:
        self.data = data
        self._expected_pods = expected_pods
        self._expected_nodes = expected_nodes
        self._lock = threading.Lock()
        self.settled = threading.Event()

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.warning("fleet worker said %r", line.strip())
                continue
            self._take(event)

    def _take(self, event: dict[str, Any]) -> None:
        kind = event.pop("event")
        with self._lock:
            if kind == "ready":
                self.data.ready.append(event)
            elif kind == "failed":
                self.data.failed_nodes.append(event)
            elif kind == "pod":
                self.data.pods.append(event)
            elif kind == "memory":
                self.data.memory.append(event)
            lost = len(self.data.failed_nodes) * self.data.plan.pods_per_node
            if len(self.data.pods) + lost >= self._expected_pods:
                self.settled.set()


def _launch(cloud: Cloud, plan: FleetPlan) -> list[str]:
    """The instances, launched with throttling off: their launch is not the CNI's doing."""
    for category in CATEGORIES:
        cloud.disable_throttle(category)
    try:
        return [cloud.launch_instance(plan.instance_type).instance_id for _ in range(plan.nodes)]
    finally:
        for category in CATEGORIES:
            spec = EC2_DEFAULT_BUCKETS[category]
            cloud.set_throttle(category, spec.capacity, spec.refill_per_s)


def run_fleet(plan: FleetPlan, pacing: Pacing, *, env: dict[str, str] | None = None) -> RunData:
    cloud = Cloud(CloudConfig(subnets=FLEET_SUBNETS, account_limits=True, seed=plan.seed))
    gateway = ImdsGateway()
    state = Path(
        tempfile.mkdtemp(prefix="vpccni-fleet-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    workers: list[_WorkerProcess] = []
    try:
        cloud.start()
        gateway.start()
        plan.latency.apply_to(cloud)
        base_rss = rss_mib()
        launched = time.monotonic()
        instances = _launch(cloud, plan)
        launch_s = time.monotonic() - launched
        imds = {i: cloud.serve_imds(gateway, i) for i in instances}
        t0 = time.monotonic() + START_MARGIN_S
        data = RunData(pacing=pacing, plan=plan, t0=t0, t0_wall=time.time() + START_MARGIN_S)
        data.instances_launched_s = round(launch_s, 1)
        data.coordinator_base_mib = round(base_rss, 1)
        sink = _Sink(data, plan.nodes * plan.pods_per_node, plan.nodes)
        client_env = cloud.client_env()
        for w in range(plan.workers):
            nodes = [
                {"instance_id": i, "imds": imds[i], "join_at": t0 + n * plan.join_s / plan.nodes}
                for n, i in enumerate(instances)
                if n % plan.workers == w
            ]
            job = {
                "nodes": nodes,
                "pacing": pacing.value,
                "pods_per_node": plan.pods_per_node,
                "deadline": t0 + plan.join_s + plan.pod_timeout_s,
                "state_dir": str(state / f"worker-{w}"),
                "seed": plan.seed * 1000 + w,
                "env": {
                    "AWS_EC2_ENDPOINT": client_env["AWS_EC2_ENDPOINT"],
                    "HTTP_TIMEOUT": SIMULATOR_HTTP_TIMEOUT_S,
                    **(env or {}),
                },
                "process_env": {k: v for k, v in client_env.items() if k.startswith("AWS_")},
            }
            workers.append(_WorkerProcess(job, sink))
        limit = plan.join_s + plan.pod_timeout_s + START_MARGIN_S + 30
        if not sink.settled.wait(limit):
            log.warning("the fleet did not settle within %.0f s", limit)
        time.sleep(plan.settle_s)
        data.end = time.monotonic()
        data.coordinator_rss_mib = round(rss_mib(), 1)
        for worker in workers:
            worker.stop()
        workers.clear()
        data.calls = [r for r in cloud.call_log if r.started >= data.t0_wall - START_MARGIN_S]
        return data
    finally:
        for worker in workers:
            worker.proc.kill()
        gateway.stop()
        cloud.stop()
        shutil.rmtree(state, ignore_errors=True)
