"""The results file's keys, which of them are invariants (the short run fails the build when one breaks),
the goals the others are held to, the soak's slopes and plot, and the "Reliability" section of
`docs/benchmarks.md` (everything after its marker line is this module's; `nox -s bench` keeps it)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpccni.testbed.bench.docs import RELIABILITY_MARKER as MARKER
from vpccni.testbed.bench.svgplot import Series, line_chart

FINDINGS_SHOWN = 20
SOAK_TRACEBACKS_LISTED = 20  # soak.json keeps the first ones


@dataclass(frozen=True, kw_only=True)
class Key:
    name: str
    what: str
    unit: str = ""
    invariant: bool = False  # must be 0: the short run fails when it is not
    at_most: float | None = None  # a goal (not an invariant: timings vary with the machine)
    at_least: float | None = None


KEYS: tuple[Key, ...] = (
    Key(name="kill9_rounds", what="SIGKILLs of the agent during churn", at_least=50),
    Key(name="kill9_pods", what="pods added during those rounds"),
    Key(name="kill9_lost_addresses", what="live pods whose address, veth or record was lost", invariant=True),
    Key(name="kill9_double_assigned", what="addresses held by two pods", invariant=True),
    Key(name="kill9_leaked_addresses", what="addresses held for no pod", invariant=True),
    Key(name="kill9_leaked_veths", what="host veths of no pod", invariant=True),
    Key(name="kill9_leaked_rules", what="ip rules of no pod", invariant=True),
    Key(name="kill9_max_restart_s", what="slowest restart to serving after a kill", unit="s"),
    Key(
        name="kill9_leaked_files",
        what="checkpoint temporary files left in the state directory",
        invariant=True,
    ),
    Key(
        name="kill9_leaked_enis",
        what="ENIs left unattached, or attached and unknown to the agent",
        invariant=True,
    ),
    Key(name="fuzz_cni_cases", what="distinct generated CNI invocations through the shim", at_least=10_000),
    Key(name="fuzz_socket_frames", what="hostile frames and clients on cni.sock and ipamd.sock"),
    Key(name="fuzz_tracebacks", what="hostile inputs that raised an unexpected exception", invariant=True),
    Key(name="fuzz_state_changes", what="hostile inputs that changed the node", invariant=True),
    Key(name="agent_crashes", what="agent exits nobody asked for (every scenario)", invariant=True),
    Key(
        name="other_tracebacks", what="tracebacks in the agent's logs in the other scenarios", invariant=True
    ),
    Key(name="idle_conn_unloaded_add_p50_ms", what="ADD p50 on the same node, no other clients", unit="ms"),
    Key(name="idle_conn_add_p50_ms", what="ADD p50 while idle and slow clients hold cni.sock", unit="ms"),
    Key(name="idle_conn_leaked_addresses", what="addresses left behind by that load", invariant=True),
    Key(
        name="ec2_fault_pods_served_pct", what="pods served under EC2 and IMDS faults", unit="%", at_least=100
    ),
    Key(
        name="imds_stale_bad_assignments",
        what="pods given an address EC2 has not on the node",
        invariant=True,
    ),
    Key(
        name="ec2_fault_max_add_s", what="slowest ADD (first attempt to address) under those faults", unit="s"
    ),
    Key(name="ec2_fault_leaks", what="addresses, veths, rules left after those pods went", invariant=True),
    Key(name="apiserver_down_pods_served", what="pods served while the API server was down"),
    Key(
        name="sigterm_with_idle_clients_s",
        what="SIGTERM to exit with idle clients connected",
        unit="s",
        at_most=10,
    ),
    Key(name="sigterm_lost_addresses", what="pods lost across that graceful restart", invariant=True),
)
INVARIANTS = tuple(k.name for k in KEYS if k.invariant)


def breaches(results: Mapping[str, Any]) -> list[str]:
    """Invariants that broke, and scenarios that did not measure theirs."""
    out = []
    for name in INVARIANTS:
        value = results.get(name)
        if value is None:
            out.append(f"{name} was not measured")
        elif value:
            out.append(f"{name} = {value}")
    return out


def verdict(key: Key, value: Any, results: Mapping[str, Any]) -> str:
    if value is None:
        return "not measured"
    if key.invariant:
        return "holds" if not value else "**broken**"
    if key.name == "idle_conn_add_p50_ms":
        base = results.get("idle_conn_unloaded_add_p50_ms")
        if base:
            return f"{value / base:.1f}x unloaded (goal ≤ 2x): " + (
                "met" if value <= 2 * base else "**missed**"
            )
    if key.at_least is not None:
        return f"goal ≥ {key.at_least:g}: " + ("met" if value >= key.at_least else "**missed**")
    if key.at_most is not None:
        return f"goal ≤ {key.at_most:g}: " + ("met" if value <= key.at_most else "**missed**")
    return ""


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour; None for fewer than two points."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600


def soak_plot(samples: Sequence[Mapping[str, float]]) -> str:
    minutes = [s["t_s"] / 60 for s in samples]
    return line_chart(
        title="ipamd during the soak: churn with periodic faults",
        x_label="minutes",
        y_label="RSS (MiB), open descriptors, threads",
        series=[
            Series(
                label="RSS MiB",
                color="#1f77b4",
                points=list(zip(minutes, (s["rss_mib"] for s in samples), strict=True)),
            ),
            Series(
                label="open fds",
                color="#d62728",
                points=list(zip(minutes, (s["fds"] for s in samples), strict=True)),
            ),
            Series(
                label="threads",
                color="#2ca02c",
                points=list(zip(minutes, (s["threads"] for s in samples), strict=True)),
            ),
        ],
    )


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def _machine(m: Mapping[str, Any]) -> str:
    return (
        f"{m.get('cores')} cores ({m.get('cpu') or 'unknown CPU'}), {m.get('memory_mib')} MiB, "
        f"{m.get('os')}, kernel {m.get('kernel')}, Python {m.get('python')}; load average at the start "
        f"{m.get('load_average_at_start')}, at the end {m.get('load_average_1_5_15')}"
    )


def render_section(
    reliability: Mapping[str, Any] | None, soak: Mapping[str, Any] | None, *, plot: str | None
) -> str:
    lines = [
        MARKER,
        "",
        "## Reliability",
        "",
        "`nox -s chaos -- --full` (`python -m vpccni.testbed.chaos --full`) drives real `aws-k8s-agent`",
        "processes and real `aws-cni` shims on testbed nodes and attacks them: SIGKILLs at chosen moments",
        "(mid checkpoint write, mid ENI attachment, mid DEL-queue drain, during node init, a node reboot),",
        "hypothesis-generated CNI invocations and hostile socket frames, idle and slow local clients, EC2",
        "and IMDS faults and an API-server outage. Every invariant is checked from outside the agent: EC2,",
        "the checkpoint file, links and rules in the node namespace, each pod's interface, the datastore",
        "through introspection. Raw numbers: `bench/results/reliability.json`. The short variant (`nox -s",
        "chaos`, part of the default CI run) fails when an invariant breaks; timings there are not judged.",
        "",
    ]
    if reliability:
        run = reliability.get("run", {})
        lines += [
            f"Run {run.get('date', '?')}{_at_commit(run)} ({run.get('mode')}, {run.get('seconds')} s, "
            f"seed {run.get('seed')}) on {_machine(reliability.get('machine', {}))}.",
            "",
            "| measurement | value | |",
            "|---|---|---|",
        ]
        for key in KEYS:
            value = reliability.get(key.name)
            judged = verdict(key, value, reliability)
            lines.append(f"| {key.what} (`{key.name}`) | {_fmt(value, key.unit)} | {judged} |")
        lines += _details(reliability)
    if soak:
        lines += _soak_lines(soak, plot)
    return "\n".join(lines) + "\n"


def _details(results: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    detail = results.get("detail") or {}
    moments = (detail.get("crash") or {}).get("moments") or {}
    if moments:
        landed = ", ".join(f"{m} {v['landed']}/{v['rounds']}" for m, v in sorted(moments.items()))
        lines += ["", f"Kill moments (landed where aimed / rounds): {landed}."]
    load = detail.get("local_load") or {}
    if load.get("adds_failed"):
        errors = ", ".join(f"{k} {v}" for k, v in sorted((load.get("errors") or {}).items()))
        lines += [
            "",
            f"Local load: {load['adds_failed']} of {load.get('samples')} ADDs under it did not finish within "
            f"{load.get('add_cap_s')} s ({errors}; the p50 above counts them at that time).",
        ]
    faults = (detail.get("cloud_faults") or {}).get("faults") or []
    if faults:
        lines += ["", "| cloud fault | pods served | slowest ADD | EC2 errors seen |", "|---|---|---|---|"]
        for f in faults:
            errors = ", ".join(f"{k} {v}" for k, v in sorted(f["ec2_errors"].items())) or "none"
            lines.append(f"| {f['fault']} | {f['served']} | {f['slowest_add_s']} s | {errors} |")
    findings = results.get("findings") or []
    notes = results.get("notes") or []
    if findings:
        lines += ["", "What broke in this run (one line per distinct finding; more in the results file):", ""]
        lines += [f"- {f}" for f in findings[:FINDINGS_SHOWN]]
        if len(findings) > FINDINGS_SHOWN:
            lines.append(f"- ... and {len(findings) - FINDINGS_SHOWN} more")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return lines


def _at_commit(run: Mapping[str, Any]) -> str:
    commit = str(run.get("commit") or "")
    if not commit:
        return ""
    # A hash (with "+ changes" for a dirty tree), or a description of older code.
    return (
        f" at commit {commit}"
        if commit.split(" ")[0].isalnum() and " " not in commit[:12]
        else f" ({commit})"
    )


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _soak_lines(soak: Mapping[str, Any], plot: str | None) -> list[str]:
    slopes = soak.get("slopes_per_hour") or {}
    late = soak.get("slopes_per_hour_after_warmup") or {}
    samples = soak.get("samples") or []
    window = max(1, int(600 / float(soak.get("sample_every_s") or 60)))  # ten minutes of samples
    tracebacks = soak.get("tracebacks") or []
    listed = len(tracebacks)
    total = soak.get("tracebacks_total", f"at least {listed}" if listed >= SOAK_TRACEBACKS_LISTED else listed)
    distinct = sorted({f'"{t.split(" -> ", 1)[0].split(": ", 1)[-1]}"' for t in tracebacks})
    lines = [
        "",
        "### Soak",
        "",
        f"`nox -s chaos -- --soak {soak.get('seconds'):g}` on {soak.get('date', '?')}"
        f"{_at_commit(soak.get('run') or {})}: churn on "
        f"{soak.get('churn_workers')} threads for {soak.get('seconds'):g} s with a fault every "
        f"{soak.get('fault_every_s'):g} s ({', '.join(soak.get('faults_run') or [])}); the agent sampled "
        f"every {soak.get('sample_every_s'):g} s. {soak.get('pods_added')} pods added, "
        f"{soak.get('add_failures')} ADDs failed.",
        "",
        "| | median, first 10 min | median, last 10 min | highest | slope per hour | same, after 10 min |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("rss_mib", "RSS (MiB)"), ("fds", "open descriptors"), ("threads", "threads")):
        values = [float(s[key]) for s in samples]
        first, last = _median(values[:window]), _median(values[-window:])
        lines.append(
            f"| {label} | {_fmt(first, '')} | {_fmt(last, '')} | {_fmt(max(values, default=None), '')} | "
            f"{_fmt(slopes.get(key), '')} | {_fmt(late.get(key), '')} |"
        )
    lines += [
        "",
        f"Invariants once the churn stopped: {'; '.join(soak.get('findings') or []) or 'all hold'}; "
        f"agent crashes: {soak.get('agent_crashes')}; tracebacks in the agent's log: {total}"
        + (f" ({', '.join(distinct)})" if distinct else "")
        + ".",
    ]
    if plot:
        lines += ["", f"![ipamd RSS, descriptors and threads during the soak]({plot})"]
    return lines


def write_section(docs: Path, section: str) -> None:
    """Replace everything from the marker on (or append) in `docs`, keeping the benchmark part."""
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    head = text.split(MARKER, 1)[0].rstrip("\n")
    docs.write_text(head + "\n\n" + section)
