"""`python -m vpccni.testbed.fleet`: the fleet simulation with both pacings; writes
`bench/results/fleet.json`, the "At scale" section of `docs/benchmarks.md` and `docs/img/fleet-pods.svg`.

Numbers are measurements, never assertions; the same run is made with vpccni's pacing and with the model
of upstream's (`vpccni.testbed.fleet.pacing`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vpccni.testbed.bench import docs as bench_docs
from vpccni.testbed.bench.machine import describe
from vpccni.testbed.fleet import docs
from vpccni.testbed.fleet.figures import calls_per_node_by_bucket, figures, last_address_wall
from vpccni.testbed.fleet.pacing import MODELS, Pacing
from vpccni.testbed.fleet.projection import project
from vpccni.testbed.fleet.run import FleetPlan, RunData, run_fleet

log = logging.getLogger(__name__)

PROJECTED_NODES = 5000
BURST_PLOT = Path("docs/img/burst100-pool.svg")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vpccni.testbed.fleet", description=__doc__)
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--join-s", type=float, default=60.0, help="nodes join evenly over this window")
    p.add_argument("--instance-type", default="m5.xlarge")
    p.add_argument("--workers", type=int, default=2, help="processes hosting the simulated nodes")
    p.add_argument(
        "--pacing", choices=[*(x.value for x in Pacing), "both"], default="both", help="default: both"
    )
    p.add_argument(
        "--runs",
        type=int,
        default=3,
        help="runs of each pacing, interleaved; medians are reported (default 3)",
    )
    p.add_argument("--quick", action="store_true", help="50 nodes joining over 20 s, one run of each")
    p.add_argument("--results", type=Path, default=Path("bench/results/fleet.json"))
    p.add_argument("--bench-results", type=Path, default=Path("bench/results/latest.json"))
    p.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/fleet-pods.svg"))
    return p.parse_args(list(argv))


def _available_mib() -> float:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory(runs: Sequence[RunData], available_mib: float) -> dict[str, Any]:
    """Per node: the workers' RSS growth per agent, and the coordinator's (EC2 state, IMDS) per node."""
    per_node, coordinator = [], []
    for data in runs:
        idle = sum(m["rss_mib"] for m in data.memory if m["phase"] == "idle")
        end = sum(m["rss_mib"] for m in data.memory if m["phase"] == "end")
        agents = sum(m["agents"] for m in data.memory if m["phase"] == "end")
        if agents:
            per_node.append((end - idle) / agents)
        grown = data.coordinator_rss_mib - data.coordinator_base_mib
        coordinator.append(grown / max(data.plan.nodes, 1))
    node_mib = max(per_node, default=0.0)
    coord_mib = max(coordinator, default=0.0)
    return {
        "per_node_mib": round(node_mib, 2),
        "coordinator_per_node_mib": round(coord_mib, 2),
        "available_mib": round(available_mib),
        "max_nodes_by_memory": int(available_mib / (node_mib + coord_mib)) if node_mib + coord_mib else None,
        "cpu_note": (
            "the testbed's EC2 (moto behind the fidelity layer) is one Python process, so the calls it can "
            "answer per second on 2 cores, not memory, limit how many nodes one run can hold."
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = FleetPlan(
        nodes=50 if args.quick else args.nodes,
        pods_per_node=args.pods_per_node,
        join_s=20.0 if args.quick else args.join_s,
        instance_type=args.instance_type,
        workers=args.workers,
    )
    pacings = list(Pacing) if args.pacing == "both" else [Pacing(args.pacing)]
    load = [round(v, 2) for v in os.getloadavg()]
    available = _available_mib()
    started = time.monotonic()
    rounds = 1 if args.quick else max(1, args.runs)
    all_runs: dict[Pacing, list[tuple[RunData, dict[str, Any]]]] = {p: [] for p in pacings}
    for round_no in range(1, rounds + 1):
        for pacing in pacings:  # interleaved: the machine's load falls on both pacings alike
            print(
                f"-- fleet: {plan.nodes} nodes, {MODELS[pacing].label}, run {round_no}/{rounds}", flush=True
            )
            load_now = [round(v, 2) for v in os.getloadavg()]
            data = run_fleet(plan, pacing)
            figs = {**figures(data), "load_average_at_start": load_now}
            all_runs[pacing].append((data, figs))
            print(
                f"   all {figs['fleet_pods']} pods have addresses after {figs['fleet_time_to_all_ips_s']} s, "
                f"{figs['fleet_failed_pods']} failed, {figs['fleet_throttled_calls']} throttled calls, "
                f"ADD wait p99 {figs['fleet_add_wait_p99_s']} s",
                flush=True,
            )
    runs: dict[Pacing, RunData] = {}
    shown: dict[str, dict[str, Any]] = {}
    for pacing, done in all_runs.items():
        data, figs = median_run(done)
        runs[pacing] = data
        shown[pacing.value] = {
            "label": MODELS[pacing].label,
            **figs,
            **medians([f for _, f in done]),
            "runs": [
                {k: f[k] for k in (*HEADLINE, "ec2_server_time_s", "load_average_at_start")} for _, f in done
            ],
        }
    out: dict[str, Any] = {}
    product = shown.get(Pacing.VPCCNI.value)
    if product:
        out.update({k: v for k, v in product.items() if k.startswith("fleet_")})
    out["pacings"] = shown
    if len(shown) == 2:
        vpccni, upstream = shown[Pacing.VPCCNI.value], shown[Pacing.UPSTREAM.value]
        out["ratio"] = {
            key: round(upstream[key] / vpccni[key], 2)
            for key in ("fleet_time_to_all_ips_s", "fleet_add_wait_p99_s", "fleet_throttled_calls")
            if vpccni.get(key) and upstream.get(key) is not None
        }
    out["projection"] = projection(runs, plan)
    out["memory"] = memory([data for done in all_runs.values() for data, _ in done], available)
    out["run"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.monotonic() - started, 1),
        "plan": {
            "runs": rounds,
            "nodes": plan.nodes,
            "pods_per_node": plan.pods_per_node,
            "join_s": plan.join_s,
            "instance_type": plan.instance_type,
            "workers": plan.workers,
            "latency": {
                "CreateNetworkInterface": plan.latency.create_eni,
                "AttachNetworkInterface": plan.latency.attach_eni,
                "AssignPrivateIpAddresses": plan.latency.assign_ips,
                "imds_lag": plan.latency.imds_lag,
            },
        },
        "machine": {**describe(), "load_average_at_start": load},
    }
    out["notes"] = notes(shown)
    return out


HEADLINE = (
    "fleet_time_to_all_ips_s",
    "fleet_failed_pods",
    "fleet_throttled_calls",
    "fleet_add_wait_p99_s",
    "fleet_add_wait_p50_s",
    "failed_add_attempts",
)


def _time_key(figs: dict[str, Any]) -> float:
    value = figs["fleet_time_to_all_ips_s"]
    return float("inf") if value is None else float(value)


def median_run(done: list[tuple[RunData, dict[str, Any]]]) -> tuple[RunData, dict[str, Any]]:
    """The run whose time to every pod's address is the median (its timeline and calls are shown)."""
    ordered = sorted(done, key=lambda run: _time_key(run[1]))
    return ordered[(len(ordered) - 1) // 2]


def medians(figs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each headline figure's median over the runs (a run where some pod never got its address has no
    time to every address: it counts as the slowest)."""
    out: dict[str, Any] = {}
    for key in HEADLINE:
        values = sorted((f[key] for f in figs), key=lambda v: float("inf") if v is None else v)
        out[key] = values[(len(values) - 1) // 2]
    return out


def projection(runs: dict[Pacing, RunData], plan: FleetPlan) -> dict[str, Any]:
    by_pacing = {}
    for pacing, data in runs.items():
        calls = calls_per_node_by_bucket(data)
        # What the account served before the last pod had its address (warm targets after that wait).
        for_pods = calls_per_node_by_bucket(data, until_wall=last_address_wall(data))
        ready = [r["ready"] - r["started"] for r in data.ready]
        node_s = min(ready, default=0.0)
        big = project(for_pods, nodes=PROJECTED_NODES, join_s=plan.join_s, node_s=node_s)
        here = project(for_pods, nodes=plan.nodes, join_s=plan.join_s, node_s=node_s)
        whole = project(calls, nodes=PROJECTED_NODES, join_s=plan.join_s, node_s=node_s)
        by_pacing[pacing.value] = {
            "bound_s": big.time_to_all_ips_s,
            "binding_bucket": big.binding_bucket,
            "per_bucket_s": dict(list(big.per_bucket_s.items())[:5]),
            "at_measured_size_s": here.time_to_all_ips_s,
            "whole_scale_out_s": whole.time_to_all_ips_s,
            "calls_per_node_by_bucket": {k: round(v, 2) for k, v in sorted(calls.items())},
            "calls_per_node_before_last_address": {k: round(v, 2) for k, v in sorted(for_pods.items())},
        }
    return {
        "nodes": PROJECTED_NODES,
        "method": (
            "Each bucket of capacity C refilled at r per second serves n calls no sooner than (n - C) / r "
            f"seconds after the first; {PROJECTED_NODES} nodes joining over {plan.join_s:g} s, each needing "
            "the calls measured per node here before the last pod had its address (throttled attempts left "
            "out: they take no token), need at least the largest of these over the buckets (and no less than "
            "the join window). The model is checked against the measured run at its own size; the whole "
            "scale-out (warm targets too) is projected from every call."
        ),
        "by_pacing": by_pacing,
    }


def notes(shown: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for figs in shown.values():
        for n, run in enumerate(figs["runs"], start=1):
            server = run["ec2_server_time_s"]
            if server["max"] and server["max"] > 5:
                out.append(
                    f"{figs['label']}, run {n}: the testbed's EC2 took up to {server['max']:g} s to answer a "
                    f"call (p99 {server['p99']:g} s, injected latency included; load average "
                    f"{run['load_average_at_start']} at its start): the machine, not EC2's limits, slowed it"
                )
        if figs["other_ec2_errors"]:
            out.append(f"{figs['label']}: other EC2 errors: {figs['other_ec2_errors']}")
    return out


def write_outputs(fleet: dict[str, Any], args: argparse.Namespace) -> None:
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(fleet, indent=2) + "\n")
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    args.plot.write_text(docs.plot(fleet))
    wrote = [str(args.results), str(args.plot)]
    if args.bench_results.exists():
        bench_docs.write_page(args.docs, results_dir=args.results.parent)
        wrote.append(str(args.docs))
    print("wrote " + ", ".join(wrote))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    write_outputs(run(args), args)
    return 0
