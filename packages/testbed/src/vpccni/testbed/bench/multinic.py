"""The multi-NIC scenario: pods with an interface per network card (ENABLE_MULTI_NIC on hpc7a.12xlarge, two
cards) through the standalone shim, alternating with ordinary pods on the same node so load weighs on both."""

from __future__ import annotations

import time
from typing import Any

from vpccni.cniplugin.netconf import MULTI_NIC_ANNOTATION, MULTI_NIC_VALUE
from vpccni.testbed.bench.harness import percentile, wait_pool
from vpccni.testbed.bench.scenarios import Run, _ms
from vpccni.testbed.noderunner import NodeRunner, Pod

INSTANCE = "hpc7a.12xlarge"
# A short cooldown, as for churn: each round's released addresses are back before the next round.
ENV = {"ENABLE_MULTI_NIC": "true", "IP_COOLDOWN_PERIOD": "1"}
PER_ROUND = 10  # half multi-NIC, half ordinary
READY_TIMEOUT_S = 30.0


def _ready(pool: dict[str, Any]) -> bool:
    free = int(pool.get("availableIPs", 0)) - int(pool.get("inCooldown", 0))
    return free >= 1 and pool.get("state") != "growing"


def wait_card_ready(runner: NodeRunner, card: int) -> bool:
    """Whether `card` has an address an ADD can take now, waiting up to 30 s. Cards above 0 keep one warm
    address (upstream's WARM_IP_TARGET=1), which each multi-NIC pod takes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        pool = runner.introspect("/v1/pool")
        if _ready(pool if card == 0 else (pool.get("networkCards") or {}).get(str(card), {})):
            return True
        time.sleep(0.05)
    return False


def multi_nic(run: Run) -> None:
    """Sequential ADDs then DELs, every other pod annotated for an interface per card. Before each multi-NIC
    ADD card 1 is let refill its one warm address (EC2's AssignPrivateIpAddresses, not timed): the ADDs
    measure the per-pod path, two wirings and two checkpoint writes."""
    times: dict[str, dict[str, list[float]]] = {k: {"add": [], "del": []} for k in ("multi", "plain")}
    failures: list[str] = []
    with run.node(instance_type=INSTANCE, env=ENV) as (_, runner):
        wait_pool(runner, min_free=PER_ROUND)
        for round_no in range(run.plan.single_rounds):
            pods: list[tuple[Pod, str]] = []
            for i in range(PER_ROUND):
                kind = "multi" if i % 2 == 0 else "plain"
                if kind == "multi" and not wait_card_ready(runner, 1):
                    failures.append("card 1 had no ready address within 30 s")
                    continue
                annotations = {MULTI_NIC_ANNOTATION: MULTI_NIC_VALUE} if kind == "multi" else None
                pod = runner.create_pod(
                    namespace="bench", name=f"mnic-{round_no}-{i}", annotations=annotations
                )
                outcome = runner.add(pod)
                if not outcome.ok:
                    failures.append(outcome.error)
                    runner.delete(pod)
                    runner.remove_pod(pod)
                    continue
                times[kind]["add"].append(outcome.elapsed_s)
                pods.append((pod, kind))
            for pod, kind in pods:
                outcome = runner.delete(pod)
                if outcome.ok:
                    times[kind]["del"].append(outcome.elapsed_s)
                else:
                    failures.append(outcome.error)
                runner.remove_pod(pod)
            wait_pool(runner, min_free=PER_ROUND, settle_s=2.0)
    run.results["multinic_add_p50_ms"] = _ms(percentile(times["multi"]["add"], 50))
    run.results["multinic_del_p50_ms"] = _ms(percentile(times["multi"]["del"], 50))
    run.extra["multi_nic"] = {
        "instance": f"{INSTANCE} (2 network cards)",
        "settings": ENV,
        "samples": {kind: len(t["add"]) for kind, t in times.items()},
        "multi_nic_add_p99_ms": _ms(percentile(times["multi"]["add"], 99)),
        "ordinary_add_p50_ms_same_node": _ms(percentile(times["plain"]["add"], 50)),
        "ordinary_del_p50_ms_same_node": _ms(percentile(times["plain"]["del"], 50)),
    }
    if failures:
        run.notes.append(f"multi-NIC: {len(failures)} failed CNI calls or waits, first: {failures[0]}")
    run.say(
        f"multi-NIC pods: ADD p50 {run.results['multinic_add_p50_ms']} ms, DEL p50 "
        f"{run.results['multinic_del_p50_ms']} ms; {run.extra['multi_nic']}"
    )
