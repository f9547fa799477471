"""The figures of one fleet run, from the workers' events and the account's EC2 call log."""

from __future__ import annotations

from collections import Counter
from typing import Any

from vpccni.testbed.bench.harness import percentile
from vpccni.testbed.ec2.throttle import account_bucket
from vpccni.testbed.fleet.run import RunData

THROTTLED = "RequestLimitExceeded"
TIMELINE_STEP_S = 1.0


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def figures(data: RunData) -> dict[str, Any]:
    """The issue's figures (`fleet_*`) and the detail behind them."""
    plan = data.plan
    nodes = len(data.ready)
    ok = [p for p in data.pods if p["ok"]]
    waits = [p["done"] - p["first_try"] for p in ok]
    last_ip = max((p["done"] for p in ok), default=None)
    by_action: Counter[str] = Counter()
    throttled_by_action: Counter[str] = Counter()
    for call in data.calls:
        by_action[call.action] += 1
        if call.error_code == THROTTLED:
            throttled_by_action[call.action] += 1
    errors = Counter(c.error_code for c in data.calls if c.error_code and c.error_code != THROTTLED)
    server_s = [c.duration for c in data.calls]
    per_node = max(nodes, 1)
    return {
        "fleet_nodes": nodes,
        "fleet_pods": len(ok),
        "fleet_time_to_all_ips_s": _round(last_ip - data.t0)
        if last_ip is not None and len(ok) == len(data.pods)
        else None,
        "fleet_failed_pods": plan.nodes * plan.pods_per_node - len(ok),
        "fleet_throttled_calls": sum(throttled_by_action.values()),
        "fleet_ec2_calls_per_node": {a: round(n / per_node, 2) for a, n in sorted(by_action.items())},
        "fleet_add_wait_p99_s": _round(percentile(waits, 99)),
        "fleet_add_wait_p50_s": _round(percentile(waits, 50)),
        "failed_add_attempts": sum(p["attempts"] - 1 for p in data.pods),
        "nodes_failed_to_start": len(data.failed_nodes),
        "node_ready_p50_s": _round(percentile([r["ready"] - r["started"] for r in data.ready], 50), 2),
        "throttled_by_action": dict(sorted(throttled_by_action.items())),
        "other_ec2_errors": dict(sorted((str(k), v) for k, v in errors.items())),
        "ec2_calls": len(data.calls),
        "ec2_server_time_s": {
            "p50": _round(percentile(server_s, 50), 3),
            "p99": _round(percentile(server_s, 99), 3),
            "max": _round(max(server_s, default=None), 3),
        },
        "timeline": timeline(data),
    }


def timeline(data: RunData) -> list[tuple[float, int]]:
    """(seconds since the first join, pods with an address) every second until the last address."""
    done = sorted(p["done"] - data.t0 for p in data.pods if p["ok"])
    if not done:
        return []
    out: list[tuple[float, int]] = []
    t, i = 0.0, 0
    while True:
        while i < len(done) and done[i] <= t:
            i += 1
        out.append((t, i))
        if i == len(done):
            return out
        t += TIMELINE_STEP_S


def successful_calls_per_node(data: RunData) -> dict[str, float]:
    """Calls EC2 served (not throttled) per node, by action: what each node needs from the account."""
    counts: Counter[str] = Counter(c.action for c in data.calls if c.error_code != THROTTLED)
    nodes = max(len(data.ready), 1)
    return {a: n / nodes for a, n in counts.items()}


def last_address_wall(data: RunData) -> float | None:
    """When the last pod got its address, on the wall clock the call log uses."""
    done = [p["done"] for p in data.pods if p["ok"]]
    return data.t0_wall + (max(done) - data.t0) if done else None


def calls_per_node_by_bucket(data: RunData, *, until_wall: float | None = None) -> dict[str, float]:
    """Successful calls per node by the account bucket EC2 meters them in (an action's unfiltered form
    apart), made before `until_wall` when given."""
    counts: Counter[str] = Counter(
        account_bucket(c.action, c.params)[0]
        for c in data.calls
        if c.error_code != THROTTLED and (until_wall is None or c.started <= until_wall)
    )
    nodes = max(len(data.ready), 1)
    return {k: n / nodes for k, n in counts.items()}
