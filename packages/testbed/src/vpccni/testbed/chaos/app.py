"""`python -m vpccni.testbed.chaos [--full | --soak SECONDS]` (`nox -s chaos`).

The default short run (every scenario, small) exits 1 when an invariant breaks and writes its results to a
temporary file; `--full` writes `bench/results/reliability.json` and the "Reliability" section of
`docs/benchmarks.md`; `--soak` writes `bench/results/soak.json`, `docs/img/reliability-soak.svg` and the
soak part of that section.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vpccni.testbed.bench.harness import tmpfs_dir
from vpccni.testbed.bench.machine import describe
from vpccni.testbed.chaos import cloudfaults, crash, hostile, load, report, soak
from vpccni.testbed.chaos.plan import Plan
from vpccni.testbed.chaos.run import ChaosRun
from vpccni.testbed.noderunner import build_shim

log = logging.getLogger(__name__)

SCENARIOS: dict[str, Callable[[ChaosRun], None]] = {
    "crash": crash.crashes,
    "hostile": hostile.hostile,
    "load": load.local_load,
    "faults": cloudfaults.cloud_faults,
    "sigterm": load.sigterm,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vpccni.testbed.chaos", description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="the committed run (>= 50 kills, >= 10,000 cases)")
    mode.add_argument("--soak", type=float, metavar="SECONDS", help="churn with periodic faults for SECONDS")
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    p.add_argument("--seed", type=int, default=None, help="seed of every random choice (default 11)")
    p.add_argument("--results", type=Path, default=None, help="where the results JSON goes")
    p.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/reliability-soak.svg"))
    return p.parse_args(list(argv))


def _plan(args: argparse.Namespace) -> Plan:
    plan = Plan.soak(args.soak) if args.soak else Plan.full() if args.full else Plan.short()
    return dataclasses.replace(plan, seed=args.seed) if args.seed is not None else plan


def _raise_fd_limit(need: int) -> None:
    """Hundreds of held clients: the soft descriptor limit up to what they need (within the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def execute(args: argparse.Namespace) -> tuple[ChaosRun, dict[str, Any]]:
    plan = _plan(args)
    _raise_fd_limit(4 * (plan.idle_clients + plan.slow_clients) + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="vpccni-chaos-"))
    state_dir = tmpfs_dir(prefix="vpccni-chaos-state-")
    started = time.monotonic()
    load_before = [round(v, 2) for v in os.getloadavg()]
    run = ChaosRun(plan=plan, workdir=workdir, shim=build_shim(workdir / "bin"), state_dir=state_dir)
    soaked: dict[str, Any] = {}
    try:
        if plan.mode == "soak":
            run.say(f"-- soak for {plan.soak_s:.0f} s")
            soaked = soak.soak(run)
        else:
            for name, scenario in SCENARIOS.items():
                if args.only and name not in args.only:
                    continue
                run.say(f"-- {name}")
                scenario_started = time.monotonic()
                try:
                    scenario(run)
                except Exception as exc:  # one broken scenario must not lose the others' numbers
                    log.exception("scenario %s failed", name)
                    run.notes.append(f"scenario {name} failed: {type(exc).__name__}: {exc}")
                run.detail.setdefault("scenario_seconds", {})[name] = round(
                    time.monotonic() - scenario_started, 1
                )
    finally:
        keep = os.environ.get("VPCCNI_CHAOS_KEEP")  # keep logs and fuzz findings to look at
        for path in (workdir, state_dir):
            if path is not None and not keep:
                shutil.rmtree(path, ignore_errors=True)
        if keep:
            run.say(f"kept {workdir} and {state_dir}")
    seconds = round(time.monotonic() - started, 1)
    meta = {
        "machine": {**describe(), "load_average_at_start": load_before},
        "run": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": _commit(),
            "mode": plan.mode,
            "seconds": seconds,
            "seed": plan.seed,
            "only": args.only or [],
            "plan": dataclasses.asdict(plan),
        },
    }
    if plan.mode == "soak":
        return run, {**soaked, **meta}
    results: dict[str, Any] = {key.name: run.results.get(key.name) for key in report.KEYS}
    if not args.only or {"crash", "hostile", "load", "faults", "sigterm"} <= set(args.only):
        results["agent_crashes"] = len(run.crashes)
        results["other_tracebacks"] = sum(len(t) for s, t in run.tracebacks.items() if s != "hostile")
    results.update(meta)
    results["notes"] = list(dict.fromkeys(run.notes)) + [f"agent crash: {c}" for c in run.crashes[:10]]
    results["tracebacks"] = {s: [str(t) for t in ts[:10]] for s, ts in run.tracebacks.items() if ts}
    distinct_tracebacks = {str(t).split(": ", 1)[-1] for ts in run.tracebacks.values() for t in ts}
    results["findings"] = (
        [f"agent crash: {c.splitlines()[0]}" for c in run.crashes]
        + run.findings
        + [f"traceback: {t}" for t in sorted(distinct_tracebacks)]
    )
    results["detail"] = run.detail
    return run, results


def _commit() -> str | None:
    """The checked-out commit the run measured ("+ changes" when the tree differs from it)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head} + changes" if dirty else head


def _results_path(args: argparse.Namespace, mode: str) -> Path:
    if args.results is not None:
        return Path(args.results)
    if mode == "full":
        return Path("bench/results/reliability.json")
    if mode == "soak":
        return Path("bench/results/soak.json")
    return Path(tempfile.gettempdir()) / "vpccni-chaos" / "reliability-short.json"


def write_outputs(args: argparse.Namespace, mode: str, results: dict[str, Any]) -> None:
    path = _results_path(args, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    if mode == "short":
        return
    reliability_path, soak_path = Path("bench/results/reliability.json"), Path("bench/results/soak.json")
    reliability = results if mode == "full" else _read(reliability_path)
    soaked = results if mode == "soak" else _read(soak_path)
    plot = None
    if soaked and soaked.get("samples"):
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        if mode == "soak":
            args.plot.write_text(report.soak_plot(soaked["samples"]))
        plot = os.path.relpath(args.plot, args.docs.parent)
    report.write_section(args.docs, report.render_section(reliability, soaked, plot=plot))
    print(f"wrote {args.docs}" + (f", {args.plot}" if mode == "soak" else ""))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (a CI timeout) unwinds like Ctrl-C: every agent is stopped and every namespace deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("the chaos suite creates network namespaces: run it as root", file=sys.stderr)
        return 2
    run, results = execute(args)
    write_outputs(args, run.plan.mode, results)
    if run.plan.mode == "soak":
        print(json.dumps({k: results[k] for k in ("slopes_per_hour", "findings", "agent_crashes")}))
        return 1 if results["findings"] or results["agent_crashes"] else 0
    print(json.dumps({k.name: results.get(k.name) for k in report.KEYS}, indent=1))
    failed = [n for n in run.notes if n.startswith("scenario ")]
    broken = (
        report.breaches(results)
        if not args.only
        else [b for b in report.breaches(results) if "not measured" not in b]
    )
    for line in failed + broken:
        print(f"CHAOS FAILURE: {line}", file=sys.stderr)
    return 1 if failed or broken else 0
