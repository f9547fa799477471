"""Harness for the daemon's integration tests: the testbed `Cluster` and the REAL `aws-k8s-agent` process
started inside a node namespace with `ip netns exec`, each with its own run dir, checkpoint and log file.

Every process is ended by its PID and every node removed, even when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from vpccni.cniplugin.version import VERSION
from vpccni.networkutils.netns import run_in_netns
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc
from vpccni.testbed.cluster import Cluster, Node

T = TypeVar("T")

AGENT = Path(sys.executable).parent / "aws-k8s-agent"
HEALTH_SERVICE = "grpc.health.v1.aws-node"
# Short loop timers so a test sees the pool move in seconds (the upstream defaults are 5/30/60 s).
FAST_ENV = {
    "IP_COOLDOWN_PERIOD": "1",
    "VPCCNI_POOL_MONITOR_INTERVAL": "1",
    "VPCCNI_POOL_DECREASE_INTERVAL": "1",
    "VPCCNI_RECONCILE_INTERVAL": "2",
    "VPCCNI_MIN_ENI_AGE": "1",
    "VPCCNI_EC2_MUTATING_QPS": "0",
    "VPCCNI_EC2_READ_QPS": "0",
    "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG",
}


def eventually(check: Callable[[], T | None], *, timeout_s: float = 60.0, what: str = "condition") -> T:
    """Poll `check` until it returns a truthy value; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            got = check()
        except (AssertionError, OSError, grpc.RpcError) as err:
            last, got = err, None
        if got:
            return got
        time.sleep(0.2)
    detail = f": {last}" if last else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")


@dataclass(kw_only=True)
class Agent:
    """One aws-k8s-agent process on one node; restartable with the same run dir and checkpoint."""

    cluster: Cluster
    node: Node
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _channel: grpc.Channel | None = None

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def socket(self) -> Path:
        return self.run_dir / "ipamd.sock"

    @property
    def checkpoint(self) -> Path:
        return self.workdir / "ipam.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / "ipamd.log"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            **self.node.env(),
            **FAST_ENV,
            "VPCCNI_RUN_DIR": str(self.run_dir),
            "AWS_VPC_K8S_CNI_BACKING_STORE": str(self.checkpoint),
            "AWS_VPC_K8S_CNI_LOG_FILE": str(self.log_file),
            **self.extra_env,
        }

    def start(self, *, wait: bool = True) -> Agent:
        assert self.proc is None or self.proc.poll() is not None, "agent already running"
        self.close_channel()
        out = open(self.workdir / "stdout.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.node.netns, str(AGENT)],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"aws-k8s-agent exited with {self.proc.returncode}:\n{self.output()}")
            return self.socket.exists() and self.health() == health_pb2.HealthCheckResponse.SERVING

        try:
            eventually(ready, timeout_s=timeout_s, what="aws-k8s-agent to serve")
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- log tail ---\n{self.output()}") from None

    def output(self, lines: int = 40) -> str:
        text = ""
        for path in (self.workdir / "stdout.log", self.log_file):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        # `ip netns exec` execs the agent, so this PID is the agent itself.
        os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        self.close_channel()
        if self.proc is None or self.proc.poll() is not None:
            return -1 if self.proc is None else self.proc.returncode
        self.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    # --- clients -----------------------------------------------------------------------------------------

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
        return self._channel

    def close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def health(self) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel())
        return int(stub.Check(health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=5).status)

    def add(
        self, pod: str, *, namespace: str = "default", version: str = VERSION, timeout_s: float = 30
    ) -> Any:
        stub = rpc_pb2_grpc.CNIBackendStub(self.channel())
        return stub.AddNetwork(
            rpc_pb2.AddNetworkRequest(
                ClientVersion=version,
                K8S_POD_NAME=pod,
                K8S_POD_NAMESPACE=namespace,
                K8S_POD_INFRA_CONTAINER_ID=f"c-{pod}",
                ContainerID=f"c-{pod}",
                IfName="eth0",
                NetworkName="aws-cni",
                Netns="/proc/1/ns/net",
            ),
            timeout=timeout_s,
        )

    def add_ok(self, pod: str, *, timeout_s: float = 60) -> ipaddress.IPv4Address:
        """AddNetwork until it succeeds (the pool may still be growing), as kubelet retries a sandbox."""

        def attempt() -> ipaddress.IPv4Address | None:
            reply = self.add(pod)
            if not reply.Success:
                return None
            return ipaddress.IPv4Address(reply.IPAllocationMetadata[0].IPv4Addr)

        return eventually(attempt, timeout_s=timeout_s, what=f"an address for {pod}")

    def delete(self, pod: str, *, namespace: str = "default") -> Any:
        stub = rpc_pb2_grpc.CNIBackendStub(self.channel())
        return stub.DelNetwork(
            rpc_pb2.DelNetworkRequest(
                ClientVersion=VERSION,
                K8S_POD_NAME=pod,
                K8S_POD_NAMESPACE=namespace,
                K8S_POD_INFRA_CONTAINER_ID=f"c-{pod}",
                ContainerID=f"c-{pod}",
                IfName="eth0",
                NetworkName="aws-cni",
                Reason="PodDeleted",
            ),
            timeout=30,
        )

    def http(self, port: int, path: str) -> bytes:
        """GET http://127.0.0.1:<port><path> from inside the node namespace."""
        fd = os.open(self.node.netns_path, os.O_RDONLY)
        try:

            def get() -> bytes:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                    return bytes(resp.read())

            return run_in_netns(fd, get)
        finally:
            os.close(fd)

    def enis(self) -> dict[str, Any]:
        """Introspection /v1/enis for network card 0."""
        return dict(json.loads(self.http(61679, "/v1/enis"))["0"])

    def pool(self) -> dict[str, Any]:
        return dict(json.loads(self.http(61679, "/v1/pool")))

    def metrics(self) -> str:
        return self.http(61678, "/metrics").decode()

    def introspected_cidrs(self) -> dict[str, set[str]]:
        """ENI id → its CIDRs ("10.0.0.5/32", "10.0.1.16/28") as introspection shows them."""
        return {eni_id: set(eni["AvailableIPv4Cidrs"]) for eni_id, eni in self.enis()["ENIs"].items()}

    # --- EC2's truth ---------------------------------------------------------------------------------------

    def ec2_enis(self) -> dict[str, dict[str, Any]]:
        """EC2's ENIs attached to the node, by id."""
        resp = self.cluster.cloud.ec2_client().describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [self.node.instance.instance_id]}]
        )
        return {e["NetworkInterfaceId"]: e for e in resp["NetworkInterfaces"]}

    def ec2_cidrs(self) -> dict[str, set[str]]:
        """ENI id → its secondary IPs (as /32) and prefixes, as EC2 has them now."""
        out = {}
        for eni_id, eni in self.ec2_enis().items():
            ips = {f"{a['PrivateIpAddress']}/32" for a in eni["PrivateIpAddresses"] if not a.get("Primary")}
            out[eni_id] = ips | {p["Ipv4Prefix"] for p in eni.get("Ipv4Prefixes", [])}
        return out

    def ec2_owns(self, ip: ipaddress.IPv4Address) -> bool:
        """Whether EC2 has `ip` assigned (as a secondary IP or inside a prefix) to an ENI of this node."""
        return any(ip in ipaddress.IPv4Network(c) for cidrs in self.ec2_cidrs().values() for c in cidrs)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def node(cluster: Cluster) -> Iterator[Node]:
    n = cluster.add_node(instance_type="m5.large")
    try:
        yield n
    finally:
        cluster.remove_node(n)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """`wait_for(check, timeout_s=..., what=...)`: the harness' `eventually`, for test modules."""
    return eventually


@pytest.fixture
def make_agent(cluster: Cluster, node: Node) -> Iterator[Callable[..., Agent]]:
    """`make_agent(**env)` → a started agent on `node`; every agent is stopped and its files removed."""
    agents: list[Agent] = []
    with tempfile.TemporaryDirectory(prefix="vpccni-ipamd-it-") as tmp:

        def make(*, start: bool = True, **env: str) -> Agent:
            workdir = Path(tmp) / f"agent{len(agents)}"
            workdir.mkdir()
            agent = Agent(cluster=cluster, node=node, workdir=workdir, extra_env=dict(env))
            agents.append(agent)
            return agent.start() if start else agent

        try:
            yield make
        finally:
            for agent in agents:
                with contextlib.suppress(Exception):
                    agent.stop(signal.SIGKILL, timeout_s=10)
