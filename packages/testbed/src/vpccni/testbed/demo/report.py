"""The demo's printed sections: pods, connectivity, warm pools, EC2 calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from vpccni.ipamd.cli.introspect import eni_rows
from vpccni.ipamd.cli.tables import render_table
from vpccni.testbed.cloud import CallRecord
from vpccni.testbed.demo.connectivity import ProbeResult
from vpccni.testbed.demo.placement import PlacedPod

MUTATING_PREFIXES = ("Create", "Attach", "Assign", "Unassign", "Detach", "Delete", "Modify")


def heading(title: str) -> str:
    return f"\n== {title}\n"


def result(failures: Iterable[str], seconds: float) -> str:
    """The closing section: each failure, then the verdict."""
    failed = [f"  FAILED: {failure}\n" for failure in failures]
    verdict = "all checks passed" if not failed else f"{len(failed)} failures"
    return heading("Result") + "\n" + "".join(failed) + f"  {verdict} in {seconds:.1f}s"


def pods_table(placed: Iterable[PlacedPod]) -> str:
    rows = [
        (p.pod.name, p.runner.node.name, p.ip, p.eni_id, f"eth{p.device_number}", _table_name(p.route_table))
        for p in sorted(placed, key=lambda p: (p.runner.node.name, p.device_number, p.ip))
    ]
    return render_table(("POD", "NODE", "IP", "ENI", "DEVICE", "ROUTE TABLE"), rows)


def _table_name(table: int) -> str:
    return "main" if table == 254 else str(table)


def connectivity_table(results: Iterable[ProbeResult]) -> str:
    rows = []
    for r in results:
        ping = "-" if r.ping_ok is None else ("ok" if r.ping_ok else "LOST")
        rows.append(
            (
                "PASS" if r.ok else "FAIL",
                r.kind,
                r.source,
                r.target,
                r.seen_source or "no answer",
                r.expected_source,
                ping,
            )
        )
    return render_table(("", "CHECK", "FROM", "TO", "SOURCE SEEN", "EXPECTED", "PING"), rows)


def pool_table(pools: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]]) -> str:
    """node → (/v1/pool, /v1/enis)."""
    rows = []
    for node, (pool, enis) in sorted(pools.items()):
        eni_list = eni_rows(enis)
        rows.append(
            (
                node,
                len(eni_list),
                pool.get("totalIPs"),
                pool.get("assignedIPs"),
                pool.get("availableIPs"),
                pool.get("inCooldown"),
                pool.get("state"),
                ", ".join(f"{e.eni_id}:{e.assigned}/{e.total}" for e in eni_list),
            )
        )
    return render_table(
        ("NODE", "ENIS", "ADDRESSES", "ASSIGNED", "FREE", "IN COOLDOWN", "STATE", "PER ENI"), rows
    )


def is_mutating(action: str) -> bool:
    return action.startswith(MUTATING_PREFIXES)


def ec2_calls_table(records: Iterable[CallRecord]) -> str:
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in records:
        counts[r.action] += 1
        if r.error_code:
            errors[r.action] += 1
    rows = [
        (action, n, errors[action] or "", "mutating" if is_mutating(action) else "read")
        for action, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    total = sum(counts.values())
    mutating = sum(n for a, n in counts.items() if is_mutating(a))
    return render_table(("ACTION", "CALLS", "ERRORS", "KIND"), rows) + f"{total} calls, {mutating} mutating\n"
