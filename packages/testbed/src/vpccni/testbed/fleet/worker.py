"""`python -m vpccni.testbed.fleet.worker`: one process hosting many simulated nodes.

It reads one JSON job from stdin's first line, starts each node's agent at its join time, creates its pods
once the agent is ready, and writes one JSON event per line to stdout (`ready`, `pod`, `memory`,
`failed`). It stops every agent when stdin says `stop` (or closes) and then writes `done`. Times are
`time.monotonic()` seconds, one clock for every process on the machine.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from vpccni.testbed.fleet.agent import FleetAgent, NodeSpec
from vpccni.testbed.fleet.kubelet import run_pod
from vpccni.testbed.fleet.pacing import MODELS, Pacing

THREAD_STACK = 512 * 1024  # thousands of threads (one per waiting pod) need little stack each


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Worker:
    def __init__(self, job: dict[str, Any], out: TextIO) -> None:
        self._job = job
        self._out = out
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._agents: list[FleetAgent] = []
        self._agents_lock = threading.Lock()
        self._pacing = MODELS[Pacing(job["pacing"])]
        self._rng = random.Random(job.get("seed", 0))

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        with self._write_lock:
            self._out.write(line + "\n")
            self._out.flush()

    def run(self, commands: TextIO) -> None:
        self.emit("memory", phase="idle", rss_mib=round(rss_mib(), 1), agents=0)
        threads = [
            threading.Thread(target=self._node, args=(node,), name=f"node-{node['instance_id']}", daemon=True)
            for node in self._job["nodes"]
        ]
        for thread in threads:
            thread.start()
        for line in commands:  # blocks until the coordinator says stop (or goes away)
            if line.strip() == "stop":
                break
        self._stop.set()
        self.emit("memory", phase="end", rss_mib=round(rss_mib(), 1), agents=len(self._agents))
        with self._agents_lock:
            agents = list(self._agents)
        for agent in agents:
            agent.stop()
        self.emit("done")

    def _node(self, node: dict[str, Any]) -> None:
        delay = node["join_at"] - time.monotonic()
        if delay > 0 and self._stop.wait(delay):
            return
        instance_id = node["instance_id"]
        agent = FleetAgent(
            node=NodeSpec(
                instance_id=instance_id,
                imds_endpoint=node["imds"],
                state_dir=Path(self._job["state_dir"]) / instance_id,
            ),
            env=self._job["env"],
            pacing=self._pacing,
        )
        started = time.monotonic()
        try:
            agent.start()
        except Exception as exc:
            logging.getLogger(__name__).exception("node %s failed to start", instance_id)
            self.emit("failed", node=instance_id, started=started, error=f"{type(exc).__name__}: {exc}")
            return
        with self._agents_lock:
            self._agents.append(agent)
        self.emit("ready", node=instance_id, started=started, ready=time.monotonic())
        add_wait = self._pacing.add_wait_s
        for n in range(self._job["pods_per_node"]):
            pod = f"{instance_id}-pod-{n}"
            rng = random.Random(self._rng.random())
            threading.Thread(
                target=lambda pod=pod, rng=rng: self.emit(
                    "pod",
                    **asdict(
                        run_pod(
                            node=instance_id,
                            pod=pod,
                            add=lambda p: agent.assign(p, timeout_s=add_wait),
                            deadline=self._job["deadline"],
                            stop=self._stop,
                            rng=rng,
                        )
                    ),
                ),
                name=pod,
                daemon=True,
            ).start()


def main() -> int:
    logging.basicConfig(level=os.environ.get("VPCCNI_FLEET_LOG", "WARNING"), stream=sys.stderr)
    threading.stack_size(THREAD_STACK)
    job = json.loads(sys.stdin.readline())
    for key, value in job.get("process_env", {}).items():
        os.environ[key] = value  # credentials and region for botocore, the same for every node
    Worker(job, sys.stdout).run(sys.stdin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
