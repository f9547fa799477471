"""Harness for the daemon's integration tests: the testbed `Cluster` and the REAL `aws-k8s-agent` process
started inside a node namespace by the testbed's `NodeRunner`, each with its own run dir, checkpoint and log.

Every process is ended by its PID and every node removed, even when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from vpccni.cniplugin.version import VERSION
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc
from vpccni.testbed.cluster import Cluster, Node
from vpccni.testbed.noderunner import NodeRunner, build_shim

T = TypeVar("T")

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


class Agent(NodeRunner):
    """The testbed's `NodeRunner` (the real agent in the node namespace) plus the upstream gRPC client and
    EC2's view of the node, with the short loop timers of `FAST_ENV`."""

    def __init__(
        self, *, cluster: Cluster, node: Node, workdir: Path, shim: Path, env: dict[str, str]
    ) -> None:
        super().__init__(node=node, workdir=workdir, shim=shim, env={**FAST_ENV, **env})
        self.cluster = cluster
        self._channel: grpc.Channel | None = None

    @property
    def socket(self) -> Path:
        return self.run_dir / "ipamd.sock"

    def start(self, *, wait: bool = True, timeout_s: float = 90.0) -> Agent:
        self.close_channel()
        super().start(wait=wait, timeout_s=timeout_s)
        if wait:
            eventually(
                lambda: self.health() == health_pb2.HealthCheckResponse.SERVING,
                timeout_s=timeout_s,
                what=f"gRPC health SERVING on {self.socket}",
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, *, timeout_s: float = 30.0) -> int | None:
        self.close_channel()
        return super().stop(sig, timeout_s=timeout_s)

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
        request = rpc_pb2.AddNetworkRequest(
            ClientVersion=version, Netns="/proc/1/ns/net", **_pod_fields(pod, namespace)
        )
        return rpc_pb2_grpc.CNIBackendStub(self.channel()).AddNetwork(request, timeout=timeout_s)

    def add_ok(self, pod: str, *, timeout_s: float = 60) -> ipaddress.IPv4Address:
        """AddNetwork until it succeeds (the pool may still be growing), as kubelet retries a sandbox."""

        def attempt() -> ipaddress.IPv4Address | None:
            reply = self.add(pod)
            if not reply.Success:
                return None
            return ipaddress.IPv4Address(reply.IPAllocationMetadata[0].IPv4Addr)

        return eventually(attempt, timeout_s=timeout_s, what=f"an address for {pod}")

    def delete(self, pod: str, *, namespace: str = "default") -> Any:
        request = rpc_pb2.DelNetworkRequest(
            ClientVersion=VERSION, Reason="PodDeleted", **_pod_fields(pod, namespace)
        )
        return rpc_pb2_grpc.CNIBackendStub(self.channel()).DelNetwork(request, timeout=30)

    def enis(self) -> dict[str, Any]:
        """Introspection /v1/enis for network card 0."""
        return dict(self.introspect("/v1/enis")["0"])

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


def _pod_fields(pod: str, namespace: str) -> dict[str, str]:
    """The request fields AddNetwork and DelNetwork share (the container id is derived from the pod)."""
    return {
        "K8S_POD_NAME": pod,
        "K8S_POD_NAMESPACE": namespace,
        "K8S_POD_INFRA_CONTAINER_ID": f"c-{pod}",
        "ContainerID": f"c-{pod}",
        "IfName": "eth0",
        "NetworkName": "aws-cni",
    }


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One testbed per module; a module's `CLUSTER_CONFIG` (a `ClusterConfig`) replaces the default."""
    c = Cluster(getattr(request.module, "CLUSTER_CONFIG", None))
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


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled aws-cni (NodeRunner installs it with the conflist, as the aws-node init does)."""
    return build_shim(tmp_path_factory.mktemp("bin"))


@pytest.fixture
def agent_on(cluster: Cluster, shim: Path) -> Iterator[Callable[..., Agent]]:
    """`agent_on(node, **env)` → a started agent on that `node` (tests with several nodes); every agent is
    stopped and its files removed."""
    agents: list[Agent] = []
    with tempfile.TemporaryDirectory(prefix="vpccni-ipamd-it-") as tmp:

        def make(node: Node, *, start: bool = True, **env: str) -> Agent:
            workdir = Path(tmp) / f"agent{len(agents)}"
            workdir.mkdir()
            agent = Agent(cluster=cluster, node=node, workdir=workdir, shim=shim, env=dict(env))
            agents.append(agent)
            return agent.start() if start else agent

        try:
            yield make
        finally:
            for agent in agents:
                with contextlib.suppress(Exception):
                    agent.stop(signal.SIGKILL, timeout_s=10)
                agent.close()


@pytest.fixture
def make_agent(node: Node, agent_on: Callable[..., Agent]) -> Callable[..., Agent]:
    """`make_agent(start=True, **env)` → an agent on `node` (see `agent_on`)."""
    return lambda **kwargs: agent_on(node, **kwargs)
