"""`--soak SECONDS`: one agent under pod churn for a long time with a fault every few minutes (EC2 throttling,
errors and latency, IMDS stale and refusing, the API server down, idle and slow local clients, hostile
frames). Its RSS, open descriptors and threads are sampled at a fixed interval; what matters is that they
stay flat (the least-squares slope per hour), and that the node holds nothing once the churn stops.

The agent is never killed here: a restart would reset exactly what the soak watches.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vpccni.testbed.chaos.cloudfaults import ISFA
from vpccni.testbed.chaos.crash import CRASH_LATENCY, veth_of
from vpccni.testbed.chaos.driver import Churn, PodDriver
from vpccni.testbed.chaos.frames import CniFrame, GrpcFrame, HeldClients, send_cni_frame, send_grpc_frame
from vpccni.testbed.chaos.ledger import Verdict, evaluate
from vpccni.testbed.chaos.observe import Observer, settled
from vpccni.testbed.chaos.plan import FAST_POOL_ENV
from vpccni.testbed.chaos.report import SOAK_TRACEBACKS_LISTED, slope_per_hour
from vpccni.testbed.chaos.run import ChaosRun
from vpccni.testbed.cluster import Cluster
from vpccni.testbed.noderunner import NodeRunner

WARMUP_S = 600.0


@dataclass(frozen=True, kw_only=True)
class SoakFault:
    name: str
    start: Callable[[], object]
    stop: Callable[[], object]
    seconds: float


def _faults(cluster: Cluster, runner: NodeRunner, rng: random.Random) -> list[SoakFault]:
    cloud, kube = cluster.cloud, cluster.kube
    held: list[HeldClients] = []

    def hold() -> None:
        held.append(HeldClients(str(runner.cni_socket), idle=200, slow=16).__enter__())

    def release() -> None:
        while held:
            held.pop().close()

    def frames() -> None:
        for _ in range(20):
            for cni_kind in CniFrame:
                send_cni_frame(str(runner.cni_socket), cni_kind, rng, wait_s=0.5)
            for grpc_kind in GrpcFrame:
                send_grpc_frame(str(runner.run_dir / "ipamd.sock"), grpc_kind, rng, wait_s=0.5)

    def nothing() -> None:
        pass

    out = [
        SoakFault(
            name="EC2 throttled",
            start=lambda: cloud.set_throttle("mutating", capacity=3, refill_per_s=0.5),
            stop=lambda: cloud.disable_throttle("mutating"),
            seconds=60,
        ),
        SoakFault(
            name=ISFA,
            start=lambda: cloud.inject_error("AssignPrivateIpAddresses", ISFA, 3),
            stop=nothing,
            seconds=30,
        ),
        SoakFault(
            name="AttachmentLimitExceeded",
            start=lambda: cloud.inject_error("AttachNetworkInterface", "AttachmentLimitExceeded", 2),
            stop=nothing,
            seconds=30,
        ),
        SoakFault(
            name="EC2 5 s latency",
            start=lambda: cloud.set_latency("*", 5.0),
            stop=lambda: cloud.set_latency("*", 0.0),
            seconds=60,
        ),
        SoakFault(
            name="IMDS 30 s stale",
            start=lambda: cloud.set_imds_lag(30.0),
            stop=lambda: cloud.set_imds_lag(0.0),
            seconds=90,
        ),
        SoakFault(
            name="IMDS refusing",
            start=lambda: cloud.set_imds_outage(True),
            stop=lambda: cloud.set_imds_outage(False),
            seconds=30,
        ),
        SoakFault(name="idle and slow clients", start=hold, stop=release, seconds=60),
        SoakFault(name="hostile frames", start=frames, stop=nothing, seconds=0),
    ]
    if kube is not None:
        out.append(
            SoakFault(
                name="API server down",
                start=lambda: kube.set_available(False),
                stop=lambda: kube.set_available(True),
                seconds=60,
            )
        )
    return out


def soak(run: ChaosRun) -> dict[str, Any]:
    plan = run.plan
    rng = random.Random(plan.seed)
    samples: list[dict[str, float]] = []
    faults_run: list[str] = []
    crashes_before = len(run.crashes)
    with run.node(env=FAST_POOL_ENV, latency=CRASH_LATENCY, scenario="soak") as (cluster, runner, life):
        driver = PodDriver(runner, namespace="soak", prefix="s")
        churn = Churn(
            driver, workers=plan.churn_workers, low=plan.churn_low, high=plan.churn_high, seed=plan.seed
        ).start()
        faults = _faults(cluster, runner, rng)
        started = time.monotonic()
        next_sample = started
        next_fault = started + plan.soak_fault_every_s
        active: tuple[SoakFault, float] | None = None
        try:
            while (now := time.monotonic()) - started < plan.soak_s:
                if now >= next_sample:
                    life.check()
                    sample = runner.process_sample()
                    if sample is not None:
                        samples.append(
                            {"t_s": round(now - started, 1), "rss_mib": round(sample.rss_mib, 2),
                             "fds": sample.fds, "threads": sample.threads}
                        )  # fmt: skip
                        run.say(f"  soak {now - started:.0f} s: {samples[-1]}, {driver.counts.adds_ok} pods")
                    next_sample += plan.soak_sample_s
                if active is not None and now >= active[1]:
                    active[0].stop()
                    active = None
                if active is None and now >= next_fault:
                    fault = faults[len(faults_run) % len(faults)]
                    fault.start()
                    faults_run.append(fault.name)
                    active = (fault, now + fault.seconds)
                    next_fault += plan.soak_fault_every_s
                time.sleep(0.5)
        finally:
            if active is not None:
                active[0].stop()
            churn.stop()
        driver.delete_all()
        observer = Observer(cluster=cluster, runner=runner)

        def once() -> Verdict:
            view = observer.view()
            return evaluate(live={}, pending=driver.pending(view.queued_dels), view=view, veth_name=veth_of)

        verdict = settled(once)

    def slopes(since_s: float) -> dict[str, float | None]:
        late = [s for s in samples if s["t_s"] >= since_s]
        return {
            key: None if (v := slope_per_hour([(s["t_s"], s[key]) for s in late])) is None else round(v, 3)
            for key in ("rss_mib", "fds", "threads")
        }

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": plan.soak_s,
        "sample_every_s": plan.soak_sample_s,
        "fault_every_s": plan.soak_fault_every_s,
        "churn_workers": plan.churn_workers,
        "faults_run": sorted(set(faults_run)),
        "pods_added": driver.counts.adds_ok,
        "add_failures": driver.counts.adds_failed,
        "samples": samples,
        "slopes_per_hour": slopes(0.0),
        "slopes_per_hour_after_warmup": slopes(min(WARMUP_S, plan.soak_s / 2)),
        "findings": [str(f) for f in verdict.findings][:20],
        "agent_crashes": len(run.crashes) - crashes_before,
        "tracebacks_total": len(run.tracebacks.get("soak", [])),
        "tracebacks": [str(t) for t in run.tracebacks.get("soak", [])][:SOAK_TRACEBACKS_LISTED],
    }
