"""SIGKILLs of the agent while pods churn: at random moments, during a checkpoint write, an ENI attachment,
a DEL-queue drain and node init, and a node reboot (every pod's network namespace gone). After each restart
the node is held to what the pods' callers were told (`ledger.evaluate`); at the end every pod is deleted
and the node must hold nothing."""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpccni.cniplugin import delqueue
from vpccni.networkutils.names import host_veth_name
from vpccni.testbed.bench.harness import Latency
from vpccni.testbed.chaos.driver import Churn, PodDriver
from vpccni.testbed.chaos.inotify import IN_CREATE, IN_DELETE, DirectoryWatch
from vpccni.testbed.chaos.ledger import Finding, PodRef, Verdict, evaluate
from vpccni.testbed.chaos.moments import Moment, schedule
from vpccni.testbed.chaos.observe import Observer, settled
from vpccni.testbed.chaos.plan import FAST_POOL_ENV
from vpccni.testbed.chaos.run import AgentLife, ChaosRun
from vpccni.testbed.chaos.stall import SyscallDelay
from vpccni.testbed.cluster import Cluster
from vpccni.testbed.noderunner import NodeRunner

# The attach is slow enough (as on EC2, where it takes seconds) for a kill to land inside it.
CRASH_LATENCY = Latency(create_eni=0.2, attach_eni=1.0, assign_ips=0.2, imds_lag=0.0)
RESTING_ENIS = 2  # the primary ENI and the spare one WARM_ENI_TARGET=1 keeps: no pods, no more ENIs
DRAIN_BATCH = 12  # DELs queued while the agent is down, for a kill in the middle of their drain
MOMENT_WAIT_S = 40.0
# The checkpoint's rename, delayed so that a kill aimed at a write lands between its temp file and rename.
RENAMES = ("rename", "renameat", "renameat2")
RENAME_DELAY_S = 0.3
QUEUE_SETTLE_S = 3.0
FINAL_QUEUE_WAIT_S = 90.0  # a DEL queued after the start-up drain waits for the periodic one
ENI_SETTLE_S = 30.0


def veth_of(pod: PodRef) -> str:
    return host_veth_name(pod.namespace, pod.name)


@dataclass(kw_only=True)
class Tally:
    """Distinct findings over every round (a leak seen in five rounds is one leak)."""

    seen: dict[tuple[str, str], Finding] = field(default_factory=dict)

    def add(self, findings: tuple[Finding, ...] | list[Finding]) -> list[Finding]:
        new = [f for f in findings if (f.kind, f.subject) not in self.seen]
        for f in new:
            self.seen[(f.kind, f.subject)] = f
        return new

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.seen if k == kind)


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    number: int
    moment: Moment
    landed: bool
    how: str  # what the trigger saw
    seconds: float  # the whole round
    restart_s: float
    live: int
    findings: tuple[str, ...]


class CrashRounds:
    def __init__(
        self, *, run: ChaosRun, cluster: Cluster, runner: NodeRunner, life: AgentLife, driver: PodDriver,
        churn: Churn,
    ) -> None:  # fmt: skip
        self.run = run
        self.cluster = cluster
        self.runner = runner
        self.life = life
        self.driver = driver
        self.churn = churn
        self.observer = Observer(cluster=cluster, runner=runner)
        self.rng = random.Random(run.plan.seed)
        self.tally = Tally()
        self.rounds: list[RoundRecord] = []

    @property
    def queue_dir(self) -> str:
        return self.observer.del_queue

    # --- one round -------------------------------------------------------------------------------------
    def round(self, number: int, moment: Moment) -> RoundRecord:
        started = time.monotonic()
        self.life.check()
        self.churn.resume()
        landed, how = {
            Moment.RANDOM: self._kill_at_random,
            Moment.CHECKPOINT_WRITE: self._kill_in_checkpoint_write,
            Moment.ENI_ATTACH: self._kill_in_eni_attach,
            Moment.DEL_QUEUE_DRAIN: self._kill_in_drain,
            Moment.STARTUP: self._kill_in_startup,
            Moment.REBOOT: self._reboot,
        }[moment]()
        self.churn.pause()
        restart_s = self.life.start()
        if moment is Moment.REBOOT:
            # The runtime tears down the sandboxes it had: DEL with a CNI_NETNS that no longer exists.
            self.driver.delete_all()
        verdict = self.check()
        self.driver.remove_kept()
        record = RoundRecord(
            number=number,
            moment=moment,
            landed=landed,
            how=how,
            seconds=round(time.monotonic() - started, 2),
            restart_s=round(restart_s, 3),
            live=len(self.driver.live()),
            findings=tuple(str(f) for f in self.tally.add(verdict.findings)),
        )
        self.rounds.append(record)
        return record

    def check(self, *, settle_s: float = QUEUE_SETTLE_S) -> Verdict:
        """The node against the driver's ledger, once DELs queued before the restart were drained."""
        deadline = time.monotonic() + settle_s
        while self.observer.queued_dels() and time.monotonic() < deadline:
            time.sleep(0.1)

        def once() -> Verdict:
            live = self.driver.live()
            view = self.observer.view(live)
            return evaluate(
                live=live, pending=self.driver.pending(view.queued_dels), view=view, veth_name=veth_of
            )

        return settled(once)

    # --- the moments ---------------------------------------------------------------------------------
    def _kill_at_random(self) -> tuple[bool, str]:
        delay = self.rng.uniform(0.3, 2.5)
        time.sleep(delay)
        self.life.kill()
        return True, f"after {delay:.2f} s of churn"

    def _kill_in_checkpoint_write(self) -> tuple[bool, str]:
        """Killed as soon as the checkpoint's temporary file appears; landed if the file is still there
        (killed before its rename)."""
        state = self.runner.checkpoint.parent
        prefix = self.runner.checkpoint.name + ".tmp"
        pid = self.runner.pid
        assert pid is not None
        with (
            SyscallDelay(pid, RENAMES, RENAME_DELAY_S) as stall,
            DirectoryWatch(str(state), IN_CREATE) as watch,
        ):
            name = watch.wait(lambda n, _: n.startswith(prefix), MOMENT_WAIT_S)
            self.life.kill()
        if not stall.active and not shutil.which("strace"):
            self.run.notes.append(
                "strace is missing: kills aimed at checkpoint writes land there by luck only"
            )
        if name is None:
            return False, f"no checkpoint write in {MOMENT_WAIT_S:.0f} s"
        left = (state / name).exists()
        return left, f"{name} {'left behind' if left else 'already renamed'}"

    def _kill_in_eni_attach(self) -> tuple[bool, str]:
        """Killed while EC2 still serves one of the agent's AttachNetworkInterface calls (the wave of pods
        makes the pool grow)."""
        cloud = self.cluster.cloud
        self._shrink_pool()
        deadline = time.monotonic() + MOMENT_WAIT_S
        while time.monotonic() < deadline:
            if cloud.in_flight("AttachNetworkInterface"):
                self.life.kill()
                return True, "AttachNetworkInterface in flight"
            time.sleep(0.005)
        self.life.kill()
        return False, f"no AttachNetworkInterface in {MOMENT_WAIT_S:.0f} s"

    def _shrink_pool(self) -> None:
        """Fewer pods until the pool gives an ENI back, so that the next wave must attach one again (quick
        waves keep pods on every ENI, and a pool at the instance's ENI limit attaches nothing)."""
        self.churn.pause()
        try:
            deadline = time.monotonic() + 30.0
            while int(self.runner.introspect("/v1/pool").get("enis", 0)) > RESTING_ENIS:
                if time.monotonic() > deadline:
                    return
                self.driver.delete_all()
                time.sleep(0.5)
        finally:
            self.churn.resume()

    def _kill_in_drain(self) -> tuple[bool, str]:
        """DELs queued while the agent is down (their sandboxes kept, so the drain has addresses to release);
        the restarted agent is killed once it finished the first and before the last."""
        self.churn.pause()
        while (
            len(self.driver.live()) < DRAIN_BATCH and self.driver.add(self.driver.new_name())[0] is not None
        ):
            pass
        self.life.kill()
        for ref in list(self.driver.live())[:DRAIN_BATCH]:
            self.driver.delete(ref, keep_sandbox=True)
        queued = len(delqueue.pending(self.queue_dir))
        if not queued:
            return False, "no live pod to delete"
        with DirectoryWatch(self.queue_dir, IN_DELETE) as watch:
            self.life.launch()
            name = watch.wait(lambda n, _: n.endswith(delqueue.SUFFIX) and not n.startswith("."), 60.0)
            self.life.kill()
        left = len(delqueue.pending(self.queue_dir))
        return name is not None and 0 < left < queued, f"{left} of {queued} queued DELs left"

    def _kill_in_startup(self) -> tuple[bool, str]:
        self.life.kill()
        self.life.launch()
        delay = self.rng.uniform(0.05, 0.6)
        time.sleep(delay)
        landed = not self.runner.cni_answers()
        self.life.kill()
        return landed, f"{delay:.2f} s after start"

    def _reboot(self) -> tuple[bool, str]:
        self.churn.pause()
        self.life.kill()
        lost = self.driver.lose_sandboxes()
        return True, f"{len(lost)} sandboxes gone"

    # --- the end -------------------------------------------------------------------------------------
    def finish(self) -> Verdict:
        """Every pod deleted; once the DEL queue is drained (the periodic drain included) the node holds
        no address, veth or rule for any pod."""
        self.churn.stop()
        self.life.check()
        self.driver.delete_all()
        deadline = time.monotonic() + FINAL_QUEUE_WAIT_S
        while (self.observer.queued_dels() or self.driver.deleting()) and time.monotonic() < deadline:
            self.driver.retry_deletes()
            time.sleep(1.0)
        self.driver.remove_kept()
        verdict = self.check(settle_s=0)
        self.tally.add(verdict.findings)
        return verdict


def crashes(run: ChaosRun) -> None:
    plan = run.plan
    with run.node(env=FAST_POOL_ENV, latency=CRASH_LATENCY, scenario="crash") as (cluster, runner, life):
        driver = PodDriver(runner, namespace="chaos", prefix="k")
        churn = Churn(
            driver, workers=plan.churn_workers, low=plan.churn_low, high=plan.churn_high, seed=plan.seed
        )
        rounds = CrashRounds(run=run, cluster=cluster, runner=runner, life=life, driver=driver, churn=churn)
        churn.start()
        try:
            for number, moment in enumerate(schedule(plan.kill_rounds, plan.seed), start=1):
                record = rounds.round(number, moment)
                run.say(
                    f"  kill {number}/{plan.kill_rounds} {moment.value}: landed={record.landed} "
                    f"({record.how}), restart {record.restart_s:.2f} s, {record.live} live pods, "
                    f"round {record.seconds:.1f} s"
                    + (f", NEW FINDINGS: {list(record.findings)}" if record.findings else "")
                )
        finally:
            final = rounds.finish()
        leftovers = sorted(
            p.name for p in Path(runner.checkpoint.parent).glob(runner.checkpoint.name + ".tmp*")
        )
        enis = _settled_eni_leftovers(rounds.observer)
    _report(run, rounds, driver, final, leftovers, enis)


def _settled_eni_leftovers(observer: Observer) -> tuple[str, ...]:
    """What `Observer.eni_leftovers` still finds after a while: an ENI the pool just freed is `available`
    between its detach and its delete, and a late attach waits for the reconciler."""
    deadline = time.monotonic() + ENI_SETTLE_S
    found = observer.eni_leftovers()
    while found and time.monotonic() < deadline:
        time.sleep(1.0)
        found = observer.eni_leftovers()
    return found


def _report(
    run: ChaosRun, rounds: CrashRounds, driver: PodDriver, final: Verdict, leftovers: list[str],
    enis: tuple[str, ...],
) -> None:  # fmt: skip
    tally = rounds.tally
    double = tally.count("double") + len(driver.double_at_ack)
    run.results.update(
        {
            "kill9_rounds": len(rounds.rounds),
            "kill9_pods": driver.counts.adds_ok,
            "kill9_lost_addresses": tally.count("lost"),
            "kill9_double_assigned": double,
            "kill9_leaked_addresses": tally.count("leaked-address"),
            "kill9_leaked_veths": tally.count("leaked-veth"),
            "kill9_leaked_rules": tally.count("leaked-rule"),
            "kill9_max_restart_s": max((r.restart_s for r in rounds.rounds), default=None),
            "kill9_leaked_files": len(leftovers),
            "kill9_leaked_enis": len(enis),
        }
    )
    by_moment: dict[str, dict[str, int]] = {}
    for r in rounds.rounds:
        entry = by_moment.setdefault(r.moment.value, {"rounds": 0, "landed": 0})
        entry["rounds"] += 1
        entry["landed"] += int(r.landed)
    errors = sorted(driver.counts.errors.items(), key=lambda kv: -kv[1])[:8]
    detail: dict[str, Any] = {
        "moments": by_moment,
        "adds_failed": driver.counts.adds_failed,
        "dels": driver.counts.dels_ok,
        "findings": [str(f) for f in list(tally.seen.values())[:30]]
        + [str(f) for f in driver.double_at_ack[:5]],
        "final_clean": final.clean,
        "cni_errors_seen": {line: n for line, n in errors},
    }
    run.detail["crash"] = detail
    run.findings += [f"kill -9: {f}" for f in tally.seen.values()] + [
        f"kill -9: {f}" for f in driver.double_at_ack
    ]
    run.findings += [f"kill -9: checkpoint temporary file left: {name}" for name in leftovers]
    run.findings += [f"kill -9: ENI left: {eni}" for eni in enis]
