"""What every chaos scenario shares: the shim, a work directory, fresh testbed nodes, the agent's life (exits
nobody asked for are crashes), log scanning, and where results, findings and notes are collected."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpccni.testbed.bench.harness import Latency, bench_node
from vpccni.testbed.chaos.logscan import LogScanner, Traceback
from vpccni.testbed.chaos.plan import Plan
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.noderunner import NodeRunner, NodeRunnerError

NO_LATENCY = Latency(create_eni=0.0, attach_eni=0.0, assign_ips=0.0, imds_lag=0.0)


class AgentLife:
    """Starts and kills one node's agent. An exit this side did not cause is a crash: it is recorded (with
    the log's tail) and the agent is started again, as the kubelet restarts a failed container."""

    def __init__(self, runner: NodeRunner, *, crashes: list[str]) -> None:
        self.runner = runner
        self._crashes = crashes
        self._meant_to_stop = False

    @property
    def pid(self) -> int | None:
        return self.runner.pid

    def start(self, *, timeout_s: float = 120.0) -> float:
        """Start and wait until it serves; returns the seconds that took (from the process start)."""
        for _ in range(3):
            self._meant_to_stop = False
            started = time.monotonic()
            self.runner.start(wait=False)
            try:
                self.runner.wait_serving(timeout_s=timeout_s)
                return time.monotonic() - started
            except NodeRunnerError as exc:
                self._crashed(f"did not come up: {str(exc)[-600:]}")
        raise NodeRunnerError(f"the agent on {self.runner.node.name} failed to start three times")

    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        self._meant_to_stop = False
        self.runner.start(wait=False)

    def kill(self, sig: int = signal.SIGKILL, *, timeout_s: float = 30.0) -> int | None:
        self._meant_to_stop = True
        return self.runner.stop(sig, timeout_s=timeout_s)

    def check(self) -> bool:
        """True while the agent runs as it should; a crash is recorded and the agent restarted."""
        proc = self.runner.proc
        if proc is None or proc.poll() is None or self._meant_to_stop:
            return True
        self._crashed(f"exited with {proc.returncode}:\n{self.runner.log_tail(15)}")
        self.start()
        return False

    def _crashed(self, what: str) -> None:
        self._crashes.append(f"agent on {self.runner.node.name} {what}")


@dataclass(kw_only=True)
class ChaosRun:
    plan: Plan
    workdir: Path
    shim: Path
    state_dir: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    tracebacks: dict[str, list[Traceback]] = field(default_factory=dict)  # scenario → tracebacks
    findings: list[str] = field(default_factory=list)  # what broke, one line each, for the docs

    def say(self, text: str) -> None:
        print(text, flush=True)

    @contextlib.contextmanager
    def node(
        self,
        *,
        instance_type: str = "m5.large",
        env: Mapping[str, str] | None = None,
        latency: Latency = NO_LATENCY,
        config: ClusterConfig | None = None,
        scenario: str,
    ) -> Iterator[tuple[Cluster, NodeRunner, AgentLife]]:
        """A fresh cluster and one started agent; its log is scanned for tracebacks when the scenario ends."""
        with bench_node(
            workdir=self.workdir,
            state_dir=self.state_dir,
            shim=self.shim,
            latency=latency,
            instance_type=instance_type,
            env=env,
            start=False,
            cluster_config=config,
        ) as (cluster, runner):
            scanner = LogScanner([runner.log_file, runner.workdir / "stdout.log", runner.plugin_log])
            life = AgentLife(runner, crashes=self.crashes)
            try:
                life.start()
                yield cluster, runner, life
                life.check()
            finally:
                self.tracebacks.setdefault(scenario, []).extend(scanner.since_mark())
