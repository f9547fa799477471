"""`python -m vpccni.testbed.netpol conformance|speed|all` (`nox -s netpol`): the network policy
conformance suite and speed benchmark on the testbed, results into `bench/results/netpol.json` (each command
replaces its own part) and `docs/benchmarks.md`'s network policy section."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vpccni.testbed.bench.machine import describe
from vpccni.testbed.netpol import cases, speed
from vpccni.testbed.netpol.cluster import PolicyCluster
from vpccni.testbed.netpol.conformance import CaseResult, ConformanceRun

RESULTS = Path("bench/results/netpol.json")
# Every freed address is free again at once, so a deleted pod's address goes to the next pod as soon as
# possible: the worst case for a stale allow.
CONFORMANCE_ENV = {"IP_COOLDOWN_PERIOD": "0"}


def run_conformance(
    *, workdir: Path, pattern: str = "", out: Any = sys.stdout, nodes: int = 2
) -> dict[str, Any]:
    chosen = (
        [case for case in cases.ALL_CASES if re.search(pattern, case.name)]
        if pattern
        else list(cases.ALL_CASES)
    )
    started = time.monotonic()
    with PolicyCluster(workdir=workdir, nodes=nodes, agent_env=CONFORMANCE_ENV) as pc:
        run = ConformanceRun(pc, out=out)
        run.setup()
        out.write(
            f"{len(pc.pods)} pods on {nodes} nodes ({', '.join(p.value for p in pc.protocols)}); "
            f"{len(chosen)} cases\n"
        )

        def show(r: CaseResult) -> None:
            verdict = "SKIP" if r.skipped else "PASS" if r.passed else "FAIL"
            out.write(f"{verdict} {r.seconds:5.1f}s {r.name}{f' ({r.skipped})' if r.skipped else ''}\n")
            for failure in r.failures:
                out.write("    " + failure.replace("\n", "\n    ") + "\n")
            out.flush()

        results = run.run(chosen, on_result=show)
        protocols = [p.value for p in pc.protocols]
    ran = [r for r in results if not r.skipped]
    failed = [r.name for r in ran if not r.passed]
    return {
        "conformance_cases": len(ran),
        "conformance_failed": len(failed),
        "conformance_failed_cases": failed,
        "conformance_skipped": {r.name: r.skipped for r in results if r.skipped},
        "conformance_run": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(time.monotonic() - started, 1),
            "nodes": nodes,
            "protocols": protocols,
            "ports": [80, 81],
            "e2e_cases": sum(r.source == "kubernetes e2e" and not r.skipped for r in results),
            "update_cases": sum(r.source == "vpccni" and not r.skipped for r in results),
            "filter": pattern or None,
            "machine": describe(),
        },
        "conformance_detail": [r.as_json() for r in results],
    }


def merge_results(path: Path, part: dict[str, Any]) -> dict[str, Any]:
    """Replace this command's keys in the results file, keep the others'."""
    current: dict[str, Any] = {}
    if path.exists():
        current = json.loads(path.read_text())
    current.update(part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return current


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vpccni.testbed.netpol", description=__doc__)
    p.add_argument("command", choices=("conformance", "speed", "all"))
    p.add_argument("--cases", default="", help="only the cases whose name matches this regular expression")
    p.add_argument("--nodes", type=int, default=2, help="conformance cluster size (default 2)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--quick", action="store_true", help="speed: fewer samples and rounds")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs of every process)")
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("the network policy suite creates network namespaces: run it as root", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="vpccni-netpol-"))
    failed = 0
    try:
        if args.command in ("conformance", "all"):
            part = run_conformance(workdir=workdir / "conformance", pattern=args.cases, nodes=args.nodes)
            merge_results(args.results, part)
            failed = part["conformance_failed"]
            print(
                f"conformance: {part['conformance_cases']} cases, {failed} failed "
                f"({len(part['conformance_skipped'])} skipped); wrote {args.results}"
            )
        if args.command in ("speed", "all"):
            part = speed.run(workdir=workdir / "speed", quick=args.quick)
            merge_results(args.results, part)
            speed.write_docs(args.docs, args.results)
            figures = ", ".join(f"{k} {part[k]}" for k in speed.RESULT_KEYS)
            print(f"speed: {figures}; wrote {args.results}, {args.docs}")
        elif args.command == "conformance" and args.docs.exists():
            speed.write_docs(args.docs, args.results)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
