"""Hostile input: generated CNI invocations through the real shim, then hostile frames and clients on both
local sockets, against a node running three sentinel pods that nothing is allowed to disturb.

After each case the checkpoint must hold the sentinels only; every `BATCH` cases, and after each kind of
frame, the whole node is held to them (`ledger.evaluate`: datastore, checkpoint, EC2, veths, rules, the
sentinels' own interfaces), they must pass CHECK, and a fresh pod must still get an address. What a case
changed is recorded and repaired, so the next case starts from the same node.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpccni.testbed.chaos.cnigrammar import Attachment, FuzzContext, generate
from vpccni.testbed.chaos.crash import veth_of
from vpccni.testbed.chaos.driver import PodDriver
from vpccni.testbed.chaos.frames import CniFrame, GrpcFrame, HeldClients, send_cni_frame, send_grpc_frame
from vpccni.testbed.chaos.fuzzcni import CaseReport, CniFuzzer, canonical_del, describe
from vpccni.testbed.chaos.ledger import Finding, Verdict, evaluate
from vpccni.testbed.chaos.logscan import LogScanner
from vpccni.testbed.chaos.observe import Observer, settled
from vpccni.testbed.chaos.run import AgentLife, ChaosRun
from vpccni.testbed.cluster import Cluster
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.noderunner import NodeRunner

SENTINELS = 3
BATCH = 100
EXAMPLES = 6  # examples kept per kind of finding
HELD_S = 10.0


@dataclass(kw_only=True)
class Findings:
    """What hostile input did, by kind (hang, protocol, internal error, traceback, state change)."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES:
            kept.append(text[:400])


class HostileNode:
    """The node under attack: its sentinels, and the checks and repairs between attacks."""

    def __init__(self, *, run: ChaosRun, cluster: Cluster, runner: NodeRunner, life: AgentLife) -> None:
        self.run = run
        self.runner = runner
        self.life = life
        self.observer = Observer(cluster=cluster, runner=runner)
        self.sentinels = PodDriver(runner, namespace="sentinel", prefix="s")
        self.canaries = PodDriver(runner, namespace="canary", prefix="c")
        self.findings = Findings()
        self.canary_s: list[float] = []
        self.fuzzer: CniFuzzer | None = None  # while CNI cases run: names the case a leaked veth came from

    def add_sentinels(self) -> None:
        while len(self.sentinels.live()) < SENTINELS:
            ref, _, _ = self.sentinels.add_until(self.sentinels.new_name(), deadline=time.monotonic() + 60)
            if ref is None:
                raise RuntimeError(f"no sentinel pod could be added: {self.sentinels.counts.errors}")

    def attachments(self) -> list[Attachment]:
        return [
            Attachment(
                container_id=r.container_id, ifname=r.ifname, namespace=r.namespace, name=r.name, ip=str(ip)
            )
            for r, ip in self.sentinels.live().items()
        ]

    def sentinel_netns(self) -> str:
        refs = list(self.sentinels.live())
        return str(ns.netns_path(refs[0].netns)) if refs else "/nonexistent"

    def verify(self, where: str) -> int:
        """The whole node against the sentinels; CHECK each; a canary pod in and out. Every finding is
        recorded as a state change and repaired. Returns the number of findings."""
        self.life.check()
        verdict = self.judge()
        suspects = self.fuzzer.suspects if self.fuzzer is not None else {}
        problems = [
            f"{f} (there since: {suspects[f.subject]})" if f.subject in suspects else str(f)
            for f in verdict.findings
        ]
        suspects.clear()
        problems += [
            f"CHECK of sentinel {r.label}: {o.error}" for r, o in self.sentinels.check_all() if not o.ok
        ]
        started = time.monotonic()
        ref, _, _ = self.canaries.add_until(self.canaries.new_name(), deadline=time.monotonic() + 30)
        if ref is None:
            problems.append(f"a canary pod got no address: {list(self.canaries.counts.errors)[-1:]}")
        else:
            self.canary_s.append(time.monotonic() - started)
            self.canaries.delete(ref)
        for problem in problems:
            self.findings.add("state change", f"{where}: {problem}")
        if problems:
            self.repair(verdict.findings)
        return len(problems)

    def repair(self, findings: tuple[Finding, ...] = ()) -> None:
        """Back to the sentinels only: leaked addresses DELeted, leaked veths and rules removed, disturbed
        sentinels replaced."""
        baseline = {(r.container_id, r.ifname) for r in self.sentinels.live()}
        for holding in self.observer.checkpoint():
            if (holding.container_id, holding.ifname) not in baseline:
                canonical_del(
                    self.runner,
                    {
                        "CNI_CONTAINERID": holding.container_id,
                        "CNI_IFNAME": holding.ifname,
                        "CNI_ARGS": f"K8S_POD_NAMESPACE={holding.namespace};K8S_POD_NAME={holding.name}",
                        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    },
                )
        for f in findings:
            if f.kind == "leaked-veth":
                ns.exec_in_netns(self.runner.node.netns, ["ip", "link", "del", f.subject])
            elif f.kind == "leaked-rule":
                prio, ip = f.subject.split()
                way = "to" if prio == "512" else "from"
                ns.exec_in_netns(self.runner.node.netns, ["ip", "rule", "del", "prio", prio, way, ip])
        live = self.sentinels.live()
        for lost in self.judge().lost:
            ref = next(r for r in live if lost.subject.startswith(r.label))
            self.sentinels.delete(ref)
        self.add_sentinels()

    def judge(self) -> Verdict:
        """The node held to its sentinels (`ledger.evaluate`), once a deleted sandbox's veth is gone."""

        def once() -> Verdict:
            live = self.sentinels.live()
            return evaluate(live=live, pending={}, view=self.observer.view(live), veth_name=veth_of)

        return settled(once)


def _fuzz_cases(run: ChaosRun, node: HostileNode, scratch: Path) -> dict[str, Any]:
    runner = node.runner
    # Every plugin log a case can name is the node's own (the others are not writable: see cnigrammar).
    scanner = LogScanner([runner.log_file, runner.workdir / "stdout.log", runner.plugin_log])
    base = runner.plugin_config()
    ctx = FuzzContext(
        network=str(base["name"]),
        base=base,
        cni_socket=str(runner.cni_socket),
        del_queue_dir=str(runner.run_dir / "del-queue"),
        plugin_log=str(runner.plugin_log),
        scratch=str(scratch),
        cni_path=str(runner.shim.parent),
        sentinels=node.attachments(),
    )
    started = time.monotonic()
    cases, drawn = generate(ctx, run.plan.fuzz_cni_cases, seed=run.plan.seed)
    generated_s = time.monotonic() - started
    run.say(f"  {len(cases)} distinct CNI cases generated ({drawn} drawn) in {generated_s:.0f} s")
    fuzzer = CniFuzzer(
        runner=runner,
        scratch=scratch,
        sentinel_netns=node.sentinel_netns,
        sentinel_veths=lambda: [veth_of(r) for r in node.sentinels.live()],
        scanner=scanner,
    )
    fuzzer.prepare()
    node.fuzzer = fuzzer
    codes: Counter[str] = Counter()
    baseline = fuzzer.baseline()
    started = time.monotonic()
    reports: list[CaseReport] = []
    for i, case in enumerate(cases, start=1):
        node.life.check()
        report = fuzzer.run(case, baseline=baseline)
        reports.append(report)
        codes[f"{report.command} -> {'ok' if report.ok else report.code}"] += 1
        for finding in report.findings:
            kind = finding.split(":", 1)[0]
            node.findings.add(kind, f"{finding} | {report.command} {describe(case)}")
        if report.findings:
            with open(scratch.parent / "fuzz-findings.jsonl", "a") as out:
                out.write(json.dumps({"findings": report.findings, **case.to_json()}) + "\n")
        if report.state_change:
            node.repair()
            baseline = fuzzer.baseline()
        if i % BATCH == 0 or i == len(cases):
            node.verify(f"after case {i}")
            baseline = fuzzer.baseline()
            run.say(
                f"  {i}/{len(cases)} cases ({i / (time.monotonic() - started):.0f}/s), "
                f"findings so far {dict(node.findings.counts)}"
            )
    fuzzer.close()
    node.fuzzer = None
    return {
        "cases": len(reports),
        "drawn": drawn,
        "generated_s": round(generated_s, 1),
        "run_s": round(time.monotonic() - started, 1),
        "hangs": sum(r.hang for r in reports),
        "succeeded": sum(r.ok for r in reports),
        "answers": dict(sorted(codes.items(), key=lambda kv: -kv[1])[:25]),
        "tracebacks": sum(1 for r in reports if r.tracebacks or r.internal),
        "state_changes": sum(1 for r in reports if r.state_change),
    }


def _frames(run: ChaosRun, node: HostileNode) -> dict[str, Any]:
    """Every frame kind on both sockets, then idle and slow clients holding them while a pod is added."""
    rng = random.Random(run.plan.seed)
    runner = node.runner
    cni_sock, grpc_sock = str(runner.cni_socket), str(runner.run_dir / "ipamd.sock")
    scanner = LogScanner([runner.log_file, runner.workdir / "stdout.log"])
    kinds: list[tuple[str, Callable[[], object]]] = [
        (f"cni.sock {k.value}", functools.partial(send_cni_frame, cni_sock, k, rng)) for k in CniFrame
    ]
    kinds += [
        (f"ipamd.sock {k.value}", functools.partial(send_grpc_frame, grpc_sock, k, rng)) for k in GrpcFrame
    ]
    per_kind = max(1, run.plan.fuzz_frames * 2 // len(kinds))
    sent = 0
    outcomes: dict[str, Counter[str]] = {}
    for name, send in kinds:
        scanner.mark()
        tally = outcomes.setdefault(name, Counter())
        for _ in range(per_kind):
            try:
                tally[_outcome(send())] += 1
            except OSError as exc:
                tally[f"client error {type(exc).__name__}"] += 1
            sent += 1
        for t in scanner.since_mark():
            node.findings.add("traceback", f"{name}: {t}")
        node.verify(f"after {name} frames")
    for path, label in ((cni_sock, "cni.sock"), (grpc_sock, "ipamd.sock")):
        payload = b"" if label == "cni.sock" else b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        with HeldClients(
            path,
            idle=run.plan.fuzz_idle_clients,
            slow=run.plan.fuzz_slow_clients,
            byte_every_s=1.0,
            payload=payload,
        ) as held:
            time.sleep(HELD_S)
            node.verify(f"with idle and slow clients on {label}")
        sent += held.opened
    return {
        "sent": sent,
        "per_kind": per_kind,
        "outcomes": {k: dict(v) for k, v in outcomes.items()},
    }


def _outcome(result: object) -> str:
    if isinstance(result, bool):
        return "answered or closed" if result else "no answer in time"
    answered = getattr(result, "answered", False)
    code = getattr(result, "error_code", None)
    if answered:
        return f"answered {code if code is not None else 'ok'}"
    return "closed" if getattr(result, "closed", False) else "no answer in time"


def hostile(run: ChaosRun) -> None:
    # A 1 s cooldown: every ADD a case made is undone at once, and with upstream's 30 s the pool would be
    # all cooldown (which counts as available, so it does not grow) and ADDs would wait for addresses.
    with run.node(instance_type="m5.xlarge", env={"IP_COOLDOWN_PERIOD": "1"}, scenario="hostile") as (
        cluster,
        runner,
        life,
    ):
        node = HostileNode(run=run, cluster=cluster, runner=runner, life=life)
        node.add_sentinels()
        cases = _fuzz_cases(run, node, runner.workdir / "fuzz")
        frames = _frames(run, node)
        node.verify("at the end")
    counts = node.findings.counts
    run.results.update(
        {
            "fuzz_cni_cases": cases["cases"],
            "fuzz_socket_frames": frames["sent"],
            "fuzz_tracebacks": counts["traceback"] + counts["internal error"],
            "fuzz_state_changes": counts["state change"],
        }
    )
    for kind in ("state change", "internal error", "hang", "protocol"):  # tracebacks: from the logs
        run.findings += [f"hostile input, {kind}: {e}" for e in node.findings.examples.get(kind, [])]
    run.detail["hostile"] = {
        "cni": cases,
        "frames": frames,
        "hangs": counts["hang"],
        "protocol_violations": counts["protocol"],
        "canary_add_s_max": round(max(node.canary_s, default=0.0), 2),
        "examples": node.findings.examples,
    }
