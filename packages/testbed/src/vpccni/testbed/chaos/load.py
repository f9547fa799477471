"""Local clients that hold the agent's sockets: ADD latency while hundreds of idle and a few slow clients
hold `cni.sock` (next to the same node's unloaded latency), and how long SIGTERM takes with idle clients
connected (Kubernetes kills at 30 s). Both end with the node held to what its pods were told."""

from __future__ import annotations

import signal
import time
from typing import Any

from vpccni.testbed.bench.harness import median, percentile, wait_pool
from vpccni.testbed.chaos.crash import veth_of
from vpccni.testbed.chaos.driver import PodDriver
from vpccni.testbed.chaos.frames import HTTP2_PREFACE, HeldClients
from vpccni.testbed.chaos.ledger import Verdict, evaluate
from vpccni.testbed.chaos.observe import Observer, settled
from vpccni.testbed.chaos.run import ChaosRun
from vpccni.testbed.noderunner import NodeRunner

SETTLE_S = 120.0  # how long the agent may take to work through what the held clients queued


def _add_times(driver: PodDriver, samples: int, *, cap_s: float) -> tuple[list[float], int]:
    """`samples` ADD-then-DEL rounds; the ADDs' times (a killed shim counts with its `cap_s`)."""
    times, failed = [], 0
    for _ in range(samples):
        ref, outcome = driver.add(driver.new_name(), timeout_s=cap_s)
        times.append(outcome.elapsed_s)
        if ref is None:
            failed += 1
        else:
            driver.delete(ref, timeout_s=cap_s)
    return times, failed


def _leaks(observer: Observer, driver: PodDriver) -> Verdict:
    def once() -> Verdict:
        live = driver.live()
        view = observer.view(live)
        return evaluate(live=live, pending=driver.pending(view.queued_dels), view=view, veth_name=veth_of)

    return settled(once)


def _wait_quiet(runner: NodeRunner, observer: Observer, timeout_s: float) -> float:
    """Until the checkpoint stopped changing for 5 s and the endpoint answers at once: what was queued
    behind the held clients has run."""
    started = time.monotonic()
    last, stable_since = None, time.monotonic()
    while time.monotonic() - started < timeout_s:
        now = observer.checkpoint()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 5.0 and runner.cni_answers():
            break
        time.sleep(0.5)
    return time.monotonic() - started


def local_load(run: ChaosRun) -> None:
    plan = run.plan
    with run.node(instance_type="m5.xlarge", scenario="load") as (cluster, runner, _):
        observer = Observer(cluster=cluster, runner=runner)
        driver = PodDriver(runner, namespace="load", prefix="l")
        wait_pool(runner, min_free=2)
        unloaded, _ = _add_times(driver, plan.load_samples, cap_s=plan.load_add_cap_s)
        with HeldClients(str(runner.cni_socket), idle=plan.idle_clients, slow=plan.slow_clients) as held:
            time.sleep(2.0)  # every client connected
            loaded, failed = _add_times(driver, plan.load_samples, cap_s=plan.load_add_cap_s)
        drained_s = _wait_quiet(runner, observer, SETTLE_S)
        driver.retry_deletes()  # DELs the held clients made time out, as kubelet retries them
        verdict = _leaks(observer, driver)
    base, under = median(unloaded), percentile(loaded, 50)
    run.results.update(
        {
            "idle_conn_unloaded_add_p50_ms": round(base * 1000, 1) if base is not None else None,
            "idle_conn_add_p50_ms": round(under * 1000, 1) if under is not None else None,
            "idle_conn_leaked_addresses": len(verdict.leaked_addresses),
        }
    )
    run.findings += [f"local load: {f}" for f in verdict.findings]
    run.detail["local_load"] = {
        "idle_clients": plan.idle_clients,
        "slow_clients": plan.slow_clients,
        "slow_byte_every_s": 5.0,
        "samples": plan.load_samples,
        "add_times_s": [round(t, 3) for t in loaded],
        "adds_failed": failed,
        "add_cap_s": plan.load_add_cap_s,
        "errors": driver.counts.errors,
        "connections_opened": held.opened,
        "connects_refused": held.refused,
        "quiet_after_s": round(drained_s, 1),
        "findings": [str(f) for f in verdict.findings][:10],
        "ratio": round(under / base, 2) if base and under else None,
    }
    run.say(f"  local load: ADD p50 {run.results['idle_conn_add_p50_ms']} ms loaded vs "
            f"{run.results['idle_conn_unloaded_add_p50_ms']} ms unloaded, {failed} failed")  # fmt: skip


def sigterm(run: ChaosRun) -> None:
    """SIGTERM with idle clients on both sockets; the restarted agent must restore every pod."""
    plan = run.plan
    with run.node(scenario="sigterm") as (cluster, runner, life):
        observer = Observer(cluster=cluster, runner=runner)
        driver = PodDriver(runner, namespace="term", prefix="t")
        for _ in range(3):
            driver.add_until(driver.new_name(), deadline=time.monotonic() + 60)
        grpc_sock = str(runner.run_dir / "ipamd.sock")
        with (
            HeldClients(str(runner.cni_socket), idle=plan.sigterm_idle_clients, slow=0),
            HeldClients(grpc_sock, idle=10, slow=0, payload=HTTP2_PREFACE),
        ):
            time.sleep(2.0)
            started = time.monotonic()
            code = life.kill(signal.SIGTERM, timeout_s=180.0)
            stop_s = time.monotonic() - started
        life.start()
        verdict = _leaks(observer, driver)
        driver.delete_all()
    run.results["sigterm_with_idle_clients_s"] = round(stop_s, 2)
    run.results["sigterm_lost_addresses"] = len(verdict.lost) + len(verdict.double)
    detail: dict[str, Any] = {
        "idle_clients": {"cni.sock": plan.sigterm_idle_clients, "ipamd.sock": 10},
        "exit_status": code,
        "after_restart": [str(f) for f in verdict.findings][:10],
    }
    run.detail["sigterm"] = detail
    run.findings += [f"SIGTERM and restart: {f}" for f in verdict.findings]
    run.say(f"  SIGTERM with idle clients: exited with {code} after {stop_s:.1f} s")
