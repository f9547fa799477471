"""`python -m vpccni.testbed.bench [--quick]`: run the scenarios, write `bench/results/latest.json`,
`docs/benchmarks.md` and the burst plot `docs/img/burst100-pool.svg`.

Numbers are measurements, never assertions: a miss against a target is reported as a miss.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vpccni.testbed.bench import docs, multinic, scenarios, sgp
from vpccni.testbed.bench.harness import Latency, tmpfs_dir
from vpccni.testbed.bench.machine import describe
from vpccni.testbed.noderunner import build_script_shim, build_shim

log = logging.getLogger(__name__)

RESULT_KEYS = (
    "cni_add_p50_ms",
    "cni_add_p99_ms",
    "cni_del_p50_ms",
    "cni_del_p99_ms",
    "shim_startup_ms",
    "shim_startup_script_ms",
    "cni_add_p50_script_ms",
    "cni_del_p50_script_ms",
    "ipv6_add_p50_ms",
    "ipv6_add_p99_ms",
    "ipv6_noegress_add_p50_ms",
    "ipv6_egress_add_p50_ms",
    "ipv6_egress_exec_add_p50_ms",
    "ipv6_del_p50_ms",
    "ipv6_noegress_del_p50_ms",
    "ipv6_egress_del_p50_ms",
    "ipv6_egress_exec_del_p50_ms",
    "ipv6_egress_floor_ms",
    "burst30_p50_ms",
    "burst100_time_to_ip_s",
    "burst100_ec2_mutating_calls",
    "churn_pairs_per_s",
    "churn_leaked_addresses",
    "ipamd_rss_mib_0",
    "ipamd_rss_mib_110",
    "ipamd_rss_mib_250",
    "ipamd_rss_growth_pct",
    "restart_to_serving_s",
    "multinic_add_p50_ms",
    "multinic_del_p50_ms",
    "sgp_add_p50_ms",
    "sgp_pod_ready_p50_s",
    "sgp_ipv6_add_p50_ms",
)
SCENARIOS: dict[str, Callable[[scenarios.Run], None]] = {
    "shim": scenarios.shim_startup,
    "single": scenarios.single_pod,
    "ipv6": scenarios.ipv6_single_pod,
    "burst30": scenarios.burst30,
    "bursts": scenarios.bursts,
    "churn": scenarios.churn,
    "rss": scenarios.rss_and_restart,
    "multinic": multinic.multi_nic,
    "sgp": sgp.sgp_pods,
    "sgp6": sgp.sgp_ipv6_pods,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vpccni.testbed.bench", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="fewer samples and 300 churn pairs (minutes, not an hour)"
    )
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    p.add_argument("--churn-pairs", type=int, default=None, help="ADD/DEL pairs (default 10000, quick 300)")
    p.add_argument("--create-eni-latency", type=float, default=0.5, help="seconds (default 0.5)")
    p.add_argument("--attach-eni-latency", type=float, default=0.75, help="seconds (default 0.75)")
    p.add_argument("--assign-ips-latency", type=float, default=0.5, help="seconds (default 0.5)")
    p.add_argument("--imds-lag", type=float, default=1.0, help="IMDS propagation lag, seconds (default 1)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="with --only: keep the other figures of the existing results file (the notes name their run)",
    )
    p.add_argument("--results", type=Path, default=Path("bench/results/latest.json"))
    p.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/burst100-pool.svg"))
    return p.parse_args(list(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    latency = Latency(
        create_eni=args.create_eni_latency,
        attach_eni=args.attach_eni_latency,
        assign_ips=args.assign_ips_latency,
        imds_lag=args.imds_lag,
    )
    plan = scenarios.Plan.for_mode(quick=args.quick, latency=latency, churn_pairs=args.churn_pairs)
    workdir = Path(tempfile.mkdtemp(prefix="vpccni-bench-"))
    state_dir = tmpfs_dir(prefix="vpccni-bench-state-")
    started = time.monotonic()
    load_before = [round(v, 2) for v in os.getloadavg()]
    try:
        bench = scenarios.Run(
            plan=plan,
            workdir=workdir,
            shim=build_shim(workdir / "bin"),
            script_shim=build_script_shim(workdir / "script-bin"),
            state_dir=state_dir,
        )
        if state_dir is None:
            bench.notes.append("no tmpfs at /dev/shm: sockets and checkpoints were on disk, not on a tmpfs")
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            bench.say(f"-- {name}")
            try:
                scenario(bench)
            except Exception as exc:  # one broken scenario must not lose the others' numbers
                log.exception("scenario %s failed", name)
                bench.notes.append(f"scenario {name} failed: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)
    results: dict[str, Any] = {key: bench.results.get(key) for key in RESULT_KEYS}
    for key in RESULT_KEYS:
        if results[key] is None and not any(key in note for note in bench.notes):
            reason = "not run (--only)" if args.only else "not measured (see the scenario's note)"
            bench.notes.append(f"{key}: {reason}")
    results["machine"] = {**describe(), "load_average_at_start": load_before}
    results["notes"] = bench.notes
    results["run"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": plan.quick,
        "seconds": round(time.monotonic() - started, 1),
        "latency": {
            "CreateNetworkInterface": latency.create_eni,
            "AttachNetworkInterface": latency.attach_eni,
            "AssignPrivateIpAddresses": latency.assign_ips,
            "imds_lag": latency.imds_lag,
        },
        "plan": {
            "shim_runs": plan.shim_runs,
            "single_rounds": plan.single_rounds,
            "single_per_round": plan.single_per_round,
            "churn_pairs": plan.churn_pairs,
            "churn_workers": plan.churn_workers,
            "burst_size": plan.burst_size,
        },
    }
    results["detail"] = {k: v for k, v in bench.extra.items() if k != "modes"}
    results["modes"] = [{k: v for k, v in m.items() if k != "timeline"} for m in bench.extra.get("modes", [])]
    results["_timeline"] = next((m["timeline"] for m in bench.extra.get("modes", []) if m["timeline"]), [])
    return results


def merged(results: dict[str, Any], previous: dict[str, Any], scenarios_run: Sequence[str]) -> dict[str, Any]:
    """`results` of a partial run laid over a previous run's: the previous figures stay where this run has
    none, and the notes say which figures came from which run and under what load."""
    fresh = {key for key in RESULT_KEYS if results.get(key) is not None}
    out = {key: results[key] if key in fresh else previous.get(key) for key in RESULT_KEYS}
    out.update({key: value for key, value in previous.items() if key not in out})
    machine, run = results["machine"], results["run"]
    stamp = (
        f"{', '.join(sorted(fresh)) or 'nothing'} measured on {run['date']} by `--only "
        f"{' --only '.join(scenarios_run)}` (load {machine.get('load_average_at_start')} at its start, "
        f"{machine.get('load_average_1_5_15')} at its end); the other figures are from the run of "
        f"{previous.get('run', {}).get('date', '?')}"
    )
    kept = [n for n in previous.get("notes") or [] if not any(key in n for key in fresh)]
    out["notes"] = [*kept, *[n for n in results["notes"] if "not run (--only)" not in n], stamp]
    out["detail"] = {**(previous.get("detail") or {}), **(results.get("detail") or {})}
    out["merged_runs"] = [*(previous.get("merged_runs") or []), {"scenarios": list(scenarios_run), **run}]
    out["_timeline"] = results.get("_timeline", [])
    return out


def write_outputs(results: dict[str, Any], args: argparse.Namespace) -> None:
    if args.merge and args.only and args.results.exists():
        results = merged(results, json.loads(args.results.read_text()), args.only)
    timeline = results.pop("_timeline", [])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    if timeline:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        args.plot.write_text(docs.burst_plot(timeline))
    # The page also shows network policy's (`python -m vpccni.testbed.netpol`) and the fleet's (`nox -s
    # fleet`) figures, from their results files.
    docs.write_page(args.docs, results_dir=args.results.parent, plot=args.plot)
    print(f"wrote {args.results}, {args.docs}" + (f", {args.plot}" if timeline else ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("the benchmarks create network namespaces: run them as root", file=sys.stderr)
        return 2
    results = run(args)
    write_outputs(results, args)
    return 0
