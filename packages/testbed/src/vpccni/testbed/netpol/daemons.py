"""The network policy processes on testbed nodes: the real `aws-network-policy-agent` in a node namespace (as
the `aws-node` container on the host network) and the real `vpccni-netpol-controller` (a host-network pod of
a Deployment). Each is a child in its own session, ended by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vpccni.ipamd.cli.introspect import HttpIntrospection, IntrospectionError
from vpccni.testbed.childproc import rss_mib_of, stop_child
from vpccni.testbed.cluster import Node
from vpccni.testbed.datapath import namespaces as ns

AGENT_INTROSPECTION = "127.0.0.1:61680"
AGENT_HEALTH = "127.0.0.1:8163"
CONTROLLER_HEALTH = "127.0.0.1:8081"


def console_script(name: str, module: str) -> list[str]:
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


class NodeDaemon:
    """One process in a node namespace; its output goes to `log`."""

    def __init__(
        self, *, node: Node, argv: Sequence[str], env: Mapping[str, str], log: Path, name: str
    ) -> None:
        self.node = node
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeDaemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.node.netns, *self.argv],
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, address: str, path: str = "/readyz", *, timeout_s: float = 60.0) -> float:
        started = time.monotonic()
        while True:
            if not self.running():
                raise RuntimeError(f"{self.name} on {self.node.name} exited:\n{self.tail()}")
            with contextlib.suppress(IntrospectionError):
                self.get_text(address, path)
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(
                    f"{self.name} on {self.node.name} not ready in {timeout_s:.0f} s:\n{self.tail()}"
                )
            time.sleep(0.05)

    def get_text(self, address: str, path: str) -> str:
        return ns.in_netns(self.node.netns, lambda: HttpIntrospection(address, timeout_s=5).get_text(path))

    def get_json(self, address: str, path: str) -> Any:
        return ns.in_netns(self.node.netns, lambda: HttpIntrospection(address, timeout_s=5).get_json(path))

    def stop(self, sig: int = signal.SIGTERM, *, timeout_s: float = 15.0) -> int | None:
        return stop_child(self.proc, sig, timeout_s=timeout_s)

    def rss_mib(self) -> float | None:
        return rss_mib_of(self.proc)

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def agent(
    node: Node, *, workdir: Path, run_dir: Path, mode: str = "standard", enabled: bool = True
) -> NodeDaemon:
    return NodeDaemon(
        node=node,
        name="aws-network-policy-agent",
        argv=[
            *console_script("aws-network-policy-agent", "vpccni.netpol.agent.main"),
            f"--enable-network-policy={'true' if enabled else 'false'}",
            "--log-file=stdout",
            "--log-level=info",
            "--metrics-bind-addr=127.0.0.1:8162",
            f"--health-probe-bind-addr={AGENT_HEALTH}",
        ],
        env={
            **node.env(),
            "VPCCNI_RUN_DIR": str(run_dir),
            "NETWORK_POLICY_ENFORCING_MODE": mode,
            "VPCCNI_NETPOL_INTROSPECTION_ADDRESS": AGENT_INTROSPECTION,
        },
        log=workdir / "agent.log",
    )


def controller(node: Node, *, workdir: Path, health: str = CONTROLLER_HEALTH) -> NodeDaemon:
    """A replica of the controller; a second one (another `health` address) is a leader-election standby."""
    return NodeDaemon(
        node=node,
        name="vpccni-netpol-controller",
        argv=[
            *console_script("vpccni-netpol-controller", "vpccni.netpol.controller.main"),
            f"--health-probe-bind-address={health}",
            "--leader-election-namespace=kube-system",
        ],
        env=node.env(),
        log=workdir / "controller.log",
    )
