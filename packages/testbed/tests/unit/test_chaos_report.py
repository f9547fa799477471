"""The reliability results: invariants, goals, the soak's slopes and the docs section."""

from __future__ import annotations

from pathlib import Path

import pytest
from vpccni.testbed.bench.docs import RELIABILITY_MARKER as MARKER
from vpccni.testbed.bench.docs import keep_section
from vpccni.testbed.chaos.report import (
    INVARIANTS,
    KEYS,
    breaches,
    render_section,
    slope_per_hour,
    verdict,
    write_section,
)

ISSUE_KEYS = (
    "kill9_rounds", "kill9_pods", "kill9_lost_addresses", "kill9_double_assigned", "kill9_leaked_veths",
    "kill9_leaked_rules", "kill9_max_restart_s", "fuzz_cni_cases", "fuzz_socket_frames", "fuzz_tracebacks",
    "fuzz_state_changes", "agent_crashes", "idle_conn_add_p50_ms", "ec2_fault_pods_served_pct",
    "imds_stale_bad_assignments", "ec2_fault_max_add_s", "apiserver_down_pods_served",
    "sigterm_with_idle_clients_s",
)  # fmt: skip


def test_every_key_the_issue_names_is_reported() -> None:
    assert set(ISSUE_KEYS) <= {k.name for k in KEYS}


def test_invariants_break_on_any_count_and_on_a_missing_measurement() -> None:
    clean = dict.fromkeys(INVARIANTS, 0)
    assert breaches(clean) == []
    assert breaches({**clean, "kill9_leaked_rules": 2}) == ["kill9_leaked_rules = 2"]
    assert breaches({**clean, "fuzz_tracebacks": None}) == ["fuzz_tracebacks was not measured"]
    assert "kill9_max_restart_s" not in INVARIANTS and "idle_conn_add_p50_ms" not in INVARIANTS


def test_goals_are_judged_against_their_bound() -> None:
    keys = {k.name: k for k in KEYS}
    assert verdict(keys["kill9_rounds"], 50, {}).endswith("met")
    assert verdict(keys["sigterm_with_idle_clients_s"], 69.0, {}).endswith("**missed**")
    loaded = {"idle_conn_unloaded_add_p50_ms": 10.0}
    assert verdict(keys["idle_conn_add_p50_ms"], 19.0, loaded) == "1.9x unloaded (goal ≤ 2x): met"
    assert verdict(keys["kill9_lost_addresses"], 0, {}) == "holds"
    assert verdict(keys["kill9_lost_addresses"], None, {}) == "not measured"


def test_slope_per_hour_is_the_least_squares_slope() -> None:
    assert slope_per_hour([(0, 80.0), (1800, 81.0), (3600, 82.0)]) == pytest.approx(2.0)
    assert slope_per_hour([(0, 5.0), (60, 5.0)]) == 0
    assert slope_per_hour([(0, 1.0)]) is None


def test_the_section_replaces_itself_and_survives_a_benchmark_rewrite(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nnumbers\n")
    results = {"kill9_rounds": 50, "run": {"mode": "full"}, "machine": {"cores": 2}}
    write_section(docs, render_section(results, None, plot=None))
    write_section(docs, render_section({**results, "kill9_rounds": 51}, None, plot=None))
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nnumbers\n") and text.count(MARKER) == 1
    assert "| 51 |" in text and "| 50 |" not in text
    rewritten = keep_section(text, "# Benchmarks\n\nnew numbers\n")
    assert rewritten.startswith("# Benchmarks\n\nnew numbers\n") and "| 51 |" in rewritten
    assert keep_section("# old page\n", "# new page\n") == "# new page\n"
