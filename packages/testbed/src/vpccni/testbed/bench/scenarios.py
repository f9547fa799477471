"""The benchmark scenarios. Each runs on its own fresh testbed node (EC2 latency injected), records numbers
into `Run.results` and anything a reader must know into `Run.notes`; none of them asserts a target."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import subprocess
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpccni.testbed.bench.harness import (
    Latency,
    PoolSampler,
    add_many,
    add_with_retry,
    bench_node,
    delete_all,
    ec2_phases,
    median,
    mutating_calls_since,
    percentile,
    wait_pool,
)
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.modes import IPV6_CLUSTER_ENV, dual_stack
from vpccni.testbed.noderunner import NodeRunner

log = logging.getLogger(__name__)

BURST_INSTANCE = "m5.4xlarge"
RSS_INSTANCE = "m5.16xlarge"  # 250 pods need more than m5.4xlarge's 234
WARM_IP_MODE = {"WARM_IP_TARGET": "10", "MINIMUM_IP_TARGET": "30"}
# WARM_PREFIX_TARGET=1 as upstream's manifest sets it (0 with no WARM_IP/MINIMUM_IP target is refused).
PREFIX_MODE = {"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"}
BURST30_ENV = {"WARM_IP_TARGET": "32"}
NO_V4_EGRESS = {"ENABLE_V4_EGRESS": "false"}  # an IPv6 node without egress-cni in its conflist
CHURN_COOLDOWN_S = 1  # IP_COOLDOWN_PERIOD for churn (upstream default 30)


@dataclass(frozen=True, kw_only=True)
class Plan:
    quick: bool
    latency: Latency = field(default_factory=Latency)
    shim_runs: int = 300
    single_rounds: int = 10
    single_per_round: int = 20  # below the 29 free addresses of a fresh m5.4xlarge: no pool growth
    churn_pairs: int = 10_000
    churn_workers: int = 4
    burst_size: int = 100

    @classmethod
    def for_mode(cls, *, quick: bool, latency: Latency, churn_pairs: int | None = None) -> Plan:
        if quick:
            return cls(
                quick=True, latency=latency, shim_runs=60, single_rounds=2, churn_pairs=churn_pairs or 300
            )
        return cls(quick=False, latency=latency, churn_pairs=churn_pairs or 10_000)


@dataclass(kw_only=True)
class Run:
    plan: Plan
    workdir: Path
    shim: Path  # the standalone aws-cni, as the init container installs it
    # The single-file script for a host's python3, measured beside it in the same run for comparison.
    script_shim: Path | None = None
    # Where each node keeps its socket and checkpoint: a tmpfs when there is one, as /var/run is on a node.
    state_dir: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # detail for the docs page (modes, timeline)

    def say(self, text: str) -> None:
        print(text, flush=True)

    def node(
        self,
        *,
        instance_type: str,
        env: Mapping[str, str] | None = None,
        cluster_config: ClusterConfig | None = None,
    ) -> AbstractContextManager[tuple[Cluster, NodeRunner]]:
        """A fresh cluster and one agent node with this run's latency, shim, workdir and state dir."""
        return bench_node(
            workdir=self.workdir,
            state_dir=self.state_dir,
            shim=self.shim,
            latency=self.plan.latency,
            instance_type=instance_type,
            env=env,
            cluster_config=cluster_config,
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _shims(run: Run) -> dict[str, Path]:
    """The executables measured, by result-key suffix: the standalone one (no suffix), the script."""
    return {"": run.shim, **({"_script": run.script_shim} if run.script_shim else {})}


def shim_startup(run: Run) -> None:
    """`aws-cni` answering VERSION: the interpreter start plus the shim's imports (no ipamd involved). The
    forms alternate run by run, so load on the machine weighs on both alike."""
    env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}
    shims = _shims(run)
    times: dict[str, list[float]] = {suffix: [] for suffix in shims}
    for _ in range(run.plan.shim_runs):
        for suffix, shim in shims.items():
            started = time.perf_counter()
            proc = subprocess.run([str(shim)], input=b"{}", env=env, capture_output=True, check=False)
            times[suffix].append(time.perf_counter() - started)
            if proc.returncode != 0:
                run.notes.append(f"shim VERSION failed ({shim}): {proc.stdout[:200]!r}")
                return
    for suffix, values in times.items():
        run.results[f"shim_startup{suffix}_ms"] = _ms(median(values))
    results = run.results
    run.say(
        f"shim start-up (VERSION, median of {run.plan.shim_runs}): standalone "
        f"{results['shim_startup_ms']} ms, script {results.get('shim_startup_script_ms')} ms"
    )


def single_pod(run: Run) -> None:
    """Sequential ADDs then DELs through the real shim on a warm m5.4xlarge (the pool never has to grow for
    them, so this is the per-pod path: shim start, socket, allocation, wiring, checkpoint). Pods alternate
    between the standalone executable and the script (each pod's DEL by the same one)."""
    shims = list(_shims(run).items())
    adds: dict[str, list[float]] = {suffix: [] for suffix, _ in shims}
    dels: dict[str, list[float]] = {suffix: [] for suffix, _ in shims}
    waited = 0
    with run.node(instance_type=BURST_INSTANCE) as (_, runner):
        for round_no in range(run.plan.single_rounds):
            wait_pool(runner, min_free=run.plan.single_per_round)
            pods = []
            for i in range(run.plan.single_per_round):
                suffix, shim = shims[i % len(shims)]
                pod = runner.create_pod(namespace="bench", name=f"single-{round_no}-{i}")
                outcome = runner.add(pod, shim_command=[str(shim)])
                if not outcome.ok:
                    waited += 1
                    runner.delete(pod)
                    result = add_with_retry(runner, pod)
                    if result.ip is None:
                        run.notes.append(f"single-pod ADD failed: {result.error}")
                        continue
                else:
                    adds[suffix].append(outcome.elapsed_s)
                pods.append((pod, suffix, shim))
            for pod, suffix, shim in pods:
                outcome = runner.delete(pod, shim_command=[str(shim)])
                if outcome.ok:
                    dels[suffix].append(outcome.elapsed_s)
                runner.remove_pod(pod)
    if waited:
        run.notes.append(
            f"single-pod: {waited} ADDs found no free address and were retried (not in the stats)"
        )
    for suffix, _ in shims:
        for key, values in (("add", adds[suffix]), ("del", dels[suffix])):
            run.results[f"cni_{key}_p50{suffix}_ms"] = _ms(percentile(values, 50))
            if not suffix:
                run.results[f"cni_{key}_p99_ms"] = _ms(percentile(values, 99))
    run.extra["single_samples"] = {
        f"{key}{suffix or '_standalone'}": len(values[suffix])
        for key, values in (("add", adds), ("del", dels))
        for suffix, _ in shims
    }
    results = run.results
    run.say(
        f"single pod ({run.extra['single_samples']}): ADD p50 {results['cni_add_p50_ms']} ms "
        f"p99 {results['cni_add_p99_ms']} ms; DEL p50 {results['cni_del_p50_ms']} ms "
        f"p99 {results['cni_del_p99_ms']} ms; the script: ADD p50 "
        f"{results.get('cni_add_p50_script_ms')} ms, DEL p50 {results.get('cni_del_p50_script_ms')} ms"
    )


def ipv6_single_pod(run: Run) -> None:
    """Sequential ADDs then DELs of IPv6 pods on two IPv6 nodes (a /80 on the primary ENI) through the
    standalone shims, as the runtime runs the conflist's chain: one node with egress-cni chained after
    aws-cni (IPv4 egress, an IPv6 cluster's default; DEL in reverse), the other without it
    (ENABLE_V4_EGRESS=false: no egress-cni in its conflist, nothing prepared by ipamd). Pods alternate
    between the two, so both see the same load. What egress-cni adds to a pod's ADD (DEL) is the difference
    of the two chains' medians: its process, its call and whatever its work costs aws-cni's own call."""
    chains: dict[str, dict[str, list[float]]] = {kind: {"add": [], "del": []} for kind in ("with", "without")}
    own: dict[str, list[float]] = {"add": [], "del": []}  # egress-cni's exec alone, for the notes
    with contextlib.ExitStack() as stack:
        runners = {
            kind: stack.enter_context(
                run.node(
                    instance_type=BURST_INSTANCE,
                    env={**IPV6_CLUSTER_ENV, **extra},
                    cluster_config=ClusterConfig(cloud=dual_stack()),
                )
            )[1]
            for kind, extra in (("with", {}), ("without", NO_V4_EGRESS))
        }
        for round_no in range(run.plan.single_rounds):
            pods = []
            for i in range(run.plan.single_per_round):
                for kind, runner in runners.items():
                    pod = runner.create_pod(namespace="bench", name=f"ipv6-{kind}-{round_no}-{i}")
                    outcome = runner.add(pod)
                    if not outcome.ok:
                        run.notes.append(f"IPv6 ADD failed ({kind} egress-cni): {outcome.error}")
                        runner.delete(pod)
                        continue
                    chains[kind]["add"].append(outcome.elapsed_s)
                    own["add"] += [s for plugin, s in outcome.plugins if plugin == "egress-cni"]
                    pods.append((kind, runner, pod))
            for kind, runner, pod in pods:
                outcome = runner.delete(pod)
                if outcome.ok:
                    chains[kind]["del"].append(outcome.elapsed_s)
                    own["del"] += [s for plugin, s in outcome.plugins if plugin == "egress-cni"]
                runner.remove_pod(pod)
        floor = _interpreter_floor(runners["with"], run.shim, runs=run.plan.shim_runs // 3)
    for key in ("add", "del"):
        with_p50 = percentile(chains["with"][key], 50)
        without_p50 = percentile(chains["without"][key], 50)
        run.results[f"ipv6_{key}_p50_ms"] = _ms(with_p50)
        run.results[f"ipv6_noegress_{key}_p50_ms"] = _ms(without_p50)
        run.results[f"ipv6_egress_{key}_p50_ms"] = (
            _ms(with_p50 - without_p50) if with_p50 is not None and without_p50 is not None else None
        )
        run.results[f"ipv6_egress_exec_{key}_p50_ms"] = _ms(percentile(own[key], 50))
    run.results["ipv6_add_p99_ms"] = _ms(percentile(chains["with"]["add"], 99))
    run.results["ipv6_egress_floor_ms"] = _ms(percentile(floor, 50))
    run.extra["ipv6_single_samples"] = {
        f"{key}_{kind}": len(values[key]) for kind, values in chains.items() for key in ("add", "del")
    }
    results = run.results
    if results["ipv6_egress_add_p50_ms"] is not None:
        run.notes.append(
            f"ipv6_egress_add_p50_ms ({results['ipv6_egress_add_p50_ms']} ms, target 5 ms) is the ADD chain "
            f"with egress-cni ({results['ipv6_add_p50_ms']} ms) minus the chain without it "
            f"({results['ipv6_noegress_add_p50_ms']} ms), same run: egress-cni's own exec "
            f"({results['ipv6_egress_exec_add_p50_ms']} ms: its trampoline answers without the interpreter, "
            f"whose bare start is {results['ipv6_egress_floor_ms']} ms here) and the egress veth ipamd wires "
            f"within aws-cni's ADD"
        )
    run.say(
        f"IPv6 pods ({run.extra['ipv6_single_samples']}): with egress-cni ADD p50 "
        f"{results['ipv6_add_p50_ms']} ms, without {results['ipv6_noegress_add_p50_ms']} ms: egress-cni adds "
        f"{results['ipv6_egress_add_p50_ms']} ms (its exec {results['ipv6_egress_exec_add_p50_ms']}); DEL "
        f"{results['ipv6_del_p50_ms']} ms, without {results['ipv6_noegress_del_p50_ms']} ms: egress-cni adds "
        f"{results['ipv6_egress_del_p50_ms']} ms (its exec {results['ipv6_egress_exec_del_p50_ms']}); the "
        f"interpreter's own start {results['ipv6_egress_floor_ms']} ms"
    )


def _interpreter_floor(runner: NodeRunner, shim: Path, *, runs: int) -> list[float]:
    """Seconds for the standalone build's interpreter to start and exit doing nothing (`python3 -I -S -c
    pass`, through its loader as the trampoline runs it): the least any call that starts it can cost."""
    root = shim.resolve().parent
    argv = [str(root / "lib" / "ld.so"), "--inhibit-cache", "--library-path", str(root / "lib"),
            str(root / "bin" / "python3"), "-I", "-S", "-c", "pass"]  # fmt: skip
    env = {"LC_ALL": "C", "TZ": "UTC0"}  # what the trampoline sets
    return [runner.exec_shim(env, b"", shim_command=argv).elapsed_s for _ in range(runs)]


def burst30(run: Run) -> None:
    """30 ADDs at once on a warm m5.4xlarge. WARM_IP_TARGET keeps 32 addresses free beforehand (the default
    WARM_ENI_TARGET=1 keeps 29 there, and the 30th ADD would measure an ENI attachment instead)."""
    with run.node(instance_type=BURST_INSTANCE, env=dict(BURST30_ENV)) as (_, runner):
        pool = wait_pool(runner, min_free=30)
        results = add_many(runner, [f"b30-{i}" for i in range(30)], workers=30)
        delete_all(runner)
    ok = [r.seconds for r in results if r.ip is not None]
    run.results["burst30_p50_ms"] = _ms(percentile(ok, 50))
    run.extra["burst30"] = {
        "settings": BURST30_ENV,
        "free_before": pool.get("availableIPs"),
        "p99_ms": _ms(percentile(ok, 99)),
        "retried": sum(r.attempts > 1 for r in results),
        "failed": sum(r.ip is None for r in results),
    }
    run.say(
        f"30 concurrent ADDs on a warm pool: p50 {run.results['burst30_p50_ms']} ms, {run.extra['burst30']}"
    )


def burst(run: Run, *, mode: str, env: dict[str, str], sample: bool = False) -> dict[str, Any]:
    """`burst_size` pods at once on a fresh m5.4xlarge right after the agent serves."""
    n = run.plan.burst_size
    with run.node(instance_type=BURST_INSTANCE, env=env) as (cluster, runner):
        sampler = PoolSampler(runner=runner).start() if sample else None
        started_wall = time.time()
        started = time.monotonic()
        results = add_many(runner, [f"burst-{i}" for i in range(n)], workers=n)
        elapsed = time.monotonic() - started
        calls = mutating_calls_since(cluster, started_wall)
        last_ip = max((r.started + r.seconds for r in results if r.ip is not None), default=started)
        phases = {
            # the runtime's 100 shim executions take a while to arrive (2 cores): the last ADD's start
            "last_add_started": round(max((r.started for r in results), default=started) - started, 3),
            **ec2_phases(cluster, started_wall, started_wall + (last_ip - started)),
            "last_pod_ip": round(last_ip - started, 3),
        }
        time.sleep(3)  # let the pool settle after the burst before counting idle addresses
        pool = runner.introspect("/v1/pool")
        timeline = sampler.stop() if sampler else []
        errors = delete_all(runner)
    failed = [r for r in results if r.ip is None]
    out = {
        "mode": mode,
        "settings": env or {"WARM_ENI_TARGET": "1 (default)"},
        "time_to_ip_s": round(max(r.seconds for r in results), 2) if results and not failed else None,
        "all_done_s": round(elapsed, 2),
        "pods_with_ip": n - len(failed),
        "retried_adds": sum(r.attempts > 1 for r in results),
        "ec2_mutating_calls": sum(calls.values()),
        "ec2_calls_by_action": calls,
        "idle_addresses_after": pool.get("availableIPs"),
        "enis_after": pool.get("enis"),
        "total_addresses_after": pool.get("totalIPs"),
        "phases_s": phases,
        "timeline": timeline,
    }
    if failed:
        run.notes.append(f"burst {mode}: {len(failed)} pods got no address: {failed[0].error}")
    if errors:
        run.notes.append(f"burst {mode}: {len(errors)} DELs failed: {errors[0]}")
    run.say(
        f"burst {n} ({mode}): every pod has an IP after {out['time_to_ip_s']} s, "
        f"{out['ec2_mutating_calls']} mutating EC2 calls, {out['idle_addresses_after']} idle addresses after"
    )
    return out


def bursts(run: Run) -> None:
    default = burst(run, mode="WARM_ENI_TARGET=1", env={}, sample=True)
    run.results["burst100_time_to_ip_s"] = default["time_to_ip_s"]
    run.results["burst100_ec2_mutating_calls"] = default["ec2_mutating_calls"]
    run.extra["modes"] = [default]
    for mode, env in (
        ("WARM_IP_TARGET=10 + MINIMUM_IP_TARGET=30", WARM_IP_MODE),
        ("prefix delegation (WARM_PREFIX_TARGET=1)", PREFIX_MODE),
    ):
        try:
            run.extra["modes"].append(burst(run, mode=mode, env=dict(env)))
        except Exception as exc:  # keep the other modes' numbers
            log.exception("burst in mode %s failed", mode)
            run.notes.append(f"burst {mode} failed: {exc}")


def _rule_lines(runner: NodeRunner) -> list[str]:
    out = ns.exec_in_netns(runner.node.netns, ["ip", "-4", "rule", "show"])
    return [line for line in out.splitlines() if line.split(":", 1)[0].strip() in ("512", "1536")]


def _veths(runner: NodeRunner) -> list[str]:
    """Host ends of pod veths (`eni` + hash; the testbed's ENI links are veths too, named ethN)."""
    out = ns.exec_in_netns(runner.node.netns, ["ip", "-o", "link", "show", "type", "veth"])
    names = [line.split(":", 2)[1].strip().split("@", 1)[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith("eni")]


def _leaked_addresses(runner: NodeRunner) -> int:
    assigned = int(runner.introspect("/v1/enis")["0"].get("AssignedIPs", 0))
    recorded = len(json.loads(runner.checkpoint.read_text()).get("allocations") or [])
    return max(assigned, recorded)


def churn(run: Run) -> None:
    """ADD/DEL pairs back to back on `churn_workers` threads; then count what was not given back.

    With IP_COOLDOWN_PERIOD=1: at the default 30 s, a fresh pool's 58 addresses allow only ~2 pairs/s (the
    cooldown, not the CNI path, would be measured, and 10,000 pairs would take well over an hour; 5 s still
    bounds it at ~11 pairs/s)."""
    pairs = run.plan.churn_pairs
    with run.node(instance_type=BURST_INSTANCE, env={"IP_COOLDOWN_PERIOD": str(CHURN_COOLDOWN_S)}) as (
        _,
        runner,
    ):
        wait_pool(runner)
        rss_before = runner.rss_mib()
        rules_before, veths_before = len(_rule_lines(runner)), len(_veths(runner))
        failures: list[str] = []

        def pair(i: int) -> None:
            pod = runner.create_pod(namespace="churn", name=f"churn-{i}")
            try:
                result = add_with_retry(runner, pod)
                if result.ip is None:
                    failures.append(result.error)
                outcome = runner.delete(pod)
                if not outcome.ok:
                    failures.append(outcome.error)
            finally:
                runner.remove_pod(pod)

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=run.plan.churn_workers) as pool:
            for i, _ in enumerate(pool.map(pair, range(pairs)), start=1):
                if i % max(1, pairs // 10) == 0:
                    run.say(f"  churn {i}/{pairs} ({i / (time.monotonic() - started):.1f} pairs/s)")
        elapsed = time.monotonic() - started
        leaked = _leaked_addresses(runner)
        rules_after = len(_rule_lines(runner))
        # The kernel destroys a deleted namespace (and the veth in it) asynchronously: give it a moment.
        settle = time.monotonic() + 5
        while (veths_after := len(_veths(runner))) > veths_before and time.monotonic() < settle:
            time.sleep(0.2)
        rss_after = runner.rss_mib()
        pool_after = runner.introspect("/v1/pool")
    run.results["churn_pairs_per_s"] = round(pairs / elapsed, 2)
    run.results["churn_leaked_addresses"] = leaked
    run.extra["churn"] = {
        "pairs": pairs,
        "workers": run.plan.churn_workers,
        "settings": {"IP_COOLDOWN_PERIOD": str(CHURN_COOLDOWN_S)},
        "seconds": round(elapsed, 1),
        "failures": len(failures),
        "leaked_rules": rules_after - rules_before,
        "leaked_veths": veths_after - veths_before,
        "rss_before_mib": round(rss_before or 0, 1),
        "rss_after_mib": round(rss_after or 0, 1),
        # The 30 s IP cooldown bounds churn: every DEL parks an address that no ADD may take for 30 s.
        "pool_after": {k: pool_after.get(k) for k in ("enis", "totalIPs", "inCooldown", "state")},
    }
    if rss_before and rss_after:
        # The memory-growth figure: ipamd's RSS after the churn against before it.
        run.results["ipamd_rss_growth_pct"] = round((rss_after - rss_before) / rss_before * 100, 1)
    total = int(pool_after.get("totalIPs") or 0)
    run.notes.append(
        f"churn ran with IP_COOLDOWN_PERIOD={CHURN_COOLDOWN_S}: as upstream, addresses in cooldown count as "
        f"available, so the pool does not grow for them and {total} addresses / cooldown bound churn (about "
        f"{total / CHURN_COOLDOWN_S:.0f} pairs/s here, {total / 30:.1f} with the default 30 s)"
    )
    if failures:
        run.notes.append(f"churn: {len(failures)} failed CNI calls, first: {failures[0]}")
    run.say(f"churn: {run.results['churn_pairs_per_s']} pairs/s, {run.extra['churn']}")


def rss_and_restart(run: Run) -> None:
    """ipamd's RSS at 0, 110 and 250 pods (m5.16xlarge), then SIGTERM and the time until a restarted agent
    serves again with the 250-entry checkpoint (and restored every assignment)."""
    with run.node(instance_type=RSS_INSTANCE) as (_, runner):
        wait_pool(runner)
        rss = {0: runner.rss_mib()}
        have = 0
        for target in (110, 250):
            results = add_many(runner, [f"rss-{i}" for i in range(have, target)], workers=8)
            failed = [r for r in results if r.ip is None]
            if failed:
                run.notes.append(f"rss: {len(failed)} of {target - have} ADDs failed: {failed[0].error}")
            have = target
            wait_pool(runner)
            rss[target] = runner.rss_mib()
        recorded = len(json.loads(runner.checkpoint.read_text()).get("allocations") or [])
        code = runner.stop()
        if code != 0:
            run.notes.append(f"restart: the agent exited with {code} on SIGTERM")
        started = time.monotonic()
        runner.start(wait=False)
        serving = runner.wait_serving(timeout_s=120)
        restart_s = time.monotonic() - started
        restored = int(runner.introspect("/v1/enis")["0"].get("AssignedIPs", 0))
        errors = delete_all(runner)
        if errors:
            run.notes.append(f"rss: {len(errors)} DELs failed: {errors[0]}")
    for count in (0, 110, 250):
        value = rss.get(count)
        run.results[f"ipamd_rss_mib_{count}"] = round(value, 1) if value is not None else None
    base, top = rss.get(0), rss.get(250)
    run.extra["rss_by_pods"] = {
        "growth_0_to_250_pct": round((top - base) / base * 100, 1) if base and top else None
    }
    run.results["restart_to_serving_s"] = round(restart_s, 2)
    run.extra["restart"] = {
        "checkpoint_entries": recorded,
        "restored_assignments": restored,
        "serving_after_s": round(serving, 2),
    }
    if restored != recorded:
        run.notes.append(f"restart: {recorded} checkpoint entries but {restored} assignments restored")
    run.say(
        f"RSS {rss} MiB; restart to serving with {recorded} entries: {restart_s:.2f} s, {restored} restored"
    )
