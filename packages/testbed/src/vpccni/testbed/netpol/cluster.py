"""`PolicyCluster`: testbed nodes running the whole product with network policy, and pods the way a cluster
makes them.

Per node: the real `aws-k8s-agent` (ipamd, through `NodeRunner`) and the real `aws-network-policy-agent`; on
the first node, the real `vpccni-netpol-controller` (a host-network Deployment pod). A pod is created as the
scheduler and kubelet do: the Pod object (labels, named container ports, `spec.nodeName`) in the API server,
its sandbox through `aws-cni` ADD, then `status.podIP`/`hostIP`/`phase` patched in. Inside each pod,
`PolicyServers` listen on TCP and UDP (and SCTP where the kernel has it) ports 80 and 81, like agnhost.

    with PolicyCluster(workdir=tmp, nodes=2) as pc:
        pc.create_namespace("x")
        a = pc.run_pod("x", "a", node=0)
        pc.apply_policy({...NetworkPolicy...})
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.kube.resources import NAMESPACES, NETWORKPOLICIES, PODS, POLICYENDPOINTS
from vpccni.testbed.kube.store import NotFoundError, ObjectStore
from vpccni.testbed.netpol import daemons
from vpccni.testbed.netpol.probe import Outcome, PolicyServers, Probe, Proto, probe_all, sctp_supported
from vpccni.testbed.noderunner import NodeRunner, Pod, build_shim

log = logging.getLogger(__name__)

PORTS = (80, 81)
# Fast pool timers, as the demo uses, so pods do not wait for a 5 s pool tick.
AGENT_ENV = {"WARM_IP_TARGET": "4", "MINIMUM_IP_TARGET": "12", "VPCCNI_POOL_MONITOR_INTERVAL": "0.5"}


def protocols() -> tuple[Proto, ...]:
    """TCP and UDP, and SCTP when this kernel has it."""
    return (Proto.TCP, Proto.UDP, Proto.SCTP) if sctp_supported() else (Proto.TCP, Proto.UDP)


def container_ports(protos: Iterable[Proto]) -> list[dict[str, Any]]:
    """agnhost's named ports: serve-80-tcp, serve-81-udp, ..."""
    return [
        {"name": f"serve-{port}-{p.value.lower()}", "containerPort": port, "protocol": p.value}
        for port in PORTS
        for p in protos
    ]


@dataclass(frozen=True, kw_only=True)
class ClusterPod:
    namespace: str
    name: str
    node: int
    ip: ipaddress.IPv4Address
    sandbox: Pod

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def netns(self) -> str:
        return self.sandbox.netns


class PolicyCluster:
    def __init__(
        self,
        *,
        workdir: Path,
        nodes: int = 2,
        instance_type: str = "m5.large",
        mode: str = "standard",
        agent_env: Mapping[str, str] | None = None,
        strict_nodes: Iterable[int] = (),
    ) -> None:
        """`mode` is NETWORK_POLICY_ENFORCING_MODE for every node but `strict_nodes` (strict there)."""
        self.workdir = workdir
        self.node_count = nodes
        self.instance_type = instance_type
        self.mode = mode
        self.strict_nodes = frozenset(strict_nodes)
        self.agent_env = {**AGENT_ENV, **(agent_env or {})}
        self.cluster = Cluster(ClusterConfig())
        self.runners: list[NodeRunner] = []
        self.agents: list[daemons.NodeDaemon] = []
        self.controller: daemons.NodeDaemon | None = None
        self.servers = PolicyServers()
        self.protocols = protocols()
        self.pods: dict[str, ClusterPod] = {}
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def store(self) -> ObjectStore:
        assert self.cluster.kube is not None
        return self.cluster.kube.store

    def start(self) -> PolicyCluster:
        self.cluster.start()
        try:
            shim = build_shim(self.workdir / "opt-cni-bin")
            nodes = [self.cluster.add_node(instance_type=self.instance_type) for _ in range(self.node_count)]
            for i, node in enumerate(nodes):
                env = {**self.agent_env, "NETWORK_POLICY_ENFORCING_MODE": self.mode_of(i)}
                runner = NodeRunner(node=node, workdir=self.workdir / node.name, shim=shim, env=env)
                self.runners.append(runner)
                runner.start(wait=False)
            for runner in self.runners:
                runner.wait_serving()
            for i in range(len(self.runners)):
                self.agents.append(self._agent(i).start())
            self.controller = daemons.controller(nodes[0], workdir=self.workdir / "controller").start()
            for agent in self.agents:
                agent.wait_healthy(daemons.AGENT_HEALTH)
            self.controller.wait_healthy(daemons.CONTROLLER_HEALTH)
        except BaseException:
            self.stop()
            raise
        return self

    def mode_of(self, node: int) -> str:
        return "strict" if node in self.strict_nodes else self.mode

    def _agent(self, node: int) -> daemons.NodeDaemon:
        runner = self.runners[node]
        mode = self.mode_of(node)
        return daemons.agent(runner.node, workdir=runner.workdir, run_dir=runner.run_dir, mode=mode)

    def restart_agent(self, node: int) -> float:
        """Stop the node's agent and start a new one; seconds until the new one is ready."""
        self.agents[node].stop()
        self.agents[node] = self._agent(node).start()
        return self.agents[node].wait_healthy(daemons.AGENT_HEALTH)

    def stop(self) -> None:
        for daemon in [*self.agents, *([self.controller] if self.controller else [])]:
            daemon.stop()
        self.servers.close()
        for runner in self.runners:
            runner.close()
        self.cluster.stop()

    def __enter__(self) -> PolicyCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- objects ---------------------------------------------------------------------------------------
    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.store.create(NAMESPACES, {"metadata": {"name": name, "labels": dict(labels or {})}})

    def set_namespace_labels(self, name: str, labels: Mapping[str, str | None]) -> None:
        self.store.patch(NAMESPACES, name, {"metadata": {"labels": dict(labels)}})

    def set_pod_labels(self, pod: ClusterPod, labels: Mapping[str, str | None]) -> None:
        self.store.patch(PODS, pod.name, {"metadata": {"labels": dict(labels)}}, namespace=pod.namespace)

    def apply_policy(self, policy: Mapping[str, Any]) -> None:
        """Create the NetworkPolicy, or replace its spec when it exists."""
        obj = copy.deepcopy(dict(policy))
        meta = obj["metadata"]
        try:
            current = self.store.get(NETWORKPOLICIES, meta["name"], meta["namespace"])
        except NotFoundError:
            self.store.create(NETWORKPOLICIES, obj, meta["namespace"])
            return
        current["spec"] = obj.get("spec", {})
        self.store.update(NETWORKPOLICIES, current, meta["namespace"])

    def delete_policy(self, namespace: str, name: str) -> None:
        self.store.delete(NETWORKPOLICIES, name, namespace)

    def delete_all_policies(self) -> None:
        items, _ = self.store.list(NETWORKPOLICIES)
        for item in items:
            self.delete_policy(item["metadata"]["namespace"], item["metadata"]["name"])

    def policy_endpoints(self) -> list[dict[str, Any]]:
        return self.store.list(POLICYENDPOINTS)[0]

    # -- pods ------------------------------------------------------------------------------------------
    def run_pod(
        self,
        namespace: str,
        name: str,
        *,
        node: int,
        labels: Mapping[str, str] | None = None,
        want_ip: ipaddress.IPv4Address | None = None,
        attempts: int = 40,
    ) -> ClusterPod:
        """Schedule, ADD, report the address: what the scheduler and kubelet do for one pod.

        `want_ip`: DEL and ADD the sandbox again until ipamd hands out that address (its free addresses are
        a queue, so each round moves one step through it; needs IP_COOLDOWN_PERIOD=0 to be quick)."""
        runner = self.runners[node]
        manifest = {
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {"pod": name})},
            "spec": {
                "nodeName": runner.node.k8s_node_name,
                "containers": [
                    {"name": "server", "image": "agnhost", "ports": container_ports(self.protocols)}
                ],
            },
            "status": {"phase": "Pending"},
        }
        self.store.create(PODS, manifest, namespace)
        sandbox = runner.create_pod(namespace=namespace, name=name)
        for _ in range(attempts):
            outcome = runner.add(sandbox)
            if not outcome.ok:
                runner.remove_pod(sandbox)
                self.store.delete(PODS, name, namespace)
                raise RuntimeError(f"ADD of {namespace}/{name} on {runner.node.name} failed: {outcome.error}")
            address = ipaddress.IPv4Address(outcome.document["ips"][0]["address"].split("/")[0])
            if want_ip is None or address == want_ip:
                break
            runner.delete(sandbox)
        else:
            runner.delete(sandbox)
            runner.remove_pod(sandbox)
            self.store.delete(PODS, name, namespace)
            raise RuntimeError(
                f"{namespace}/{name} never got {want_ip} in {attempts} ADDs on {runner.node.name}"
            )
        self.store.patch(
            PODS,
            name,
            {
                "status": {
                    "phase": "Running",
                    "podIP": str(address),
                    "podIPs": [{"ip": str(address)}],
                    "hostIP": str(runner.node.instance.primary_ip),
                }
            },
            namespace=namespace,
        )
        self.servers.listen(sandbox.netns, PORTS, self.protocols)
        pod = ClusterPod(namespace=namespace, name=name, node=node, ip=address, sandbox=sandbox)
        with self._lock:
            self.pods[pod.label] = pod
        return pod

    def delete_pod(self, pod: ClusterPod) -> None:
        """The kubelet's part of a pod deletion: DEL, sandbox gone, then the object."""
        runner = self.runners[pod.node]
        self.servers.forget(pod.netns)
        outcome = runner.delete(pod.sandbox)
        runner.remove_pod(pod.sandbox)
        self.store.delete(PODS, pod.name, pod.namespace)
        with self._lock:
            self.pods.pop(pod.label, None)
        if not outcome.ok:
            raise RuntimeError(f"DEL of {pod.label} failed: {outcome.error}")

    # -- what the agents and packets say ---------------------------------------------------------------
    def agent_pods(self, node: int) -> list[dict[str, Any]]:
        doc = self.agents[node].get_json(daemons.AGENT_INTROSPECTION, "/v1/pods")
        return list(doc)

    def policies_in_force(self) -> dict[str, set[str]]:
        """pod label -> the policies (namespace/name) its node's agent has in the kernel for it."""
        out: dict[str, set[str]] = {}
        for node in range(len(self.agents)):
            for entry in self.agent_pods(node):
                out[f"{entry['namespace']}/{entry['name']}"] = set(entry["policies"])
        return out

    def wait_for(self, predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(interval_s)

    def probe(
        self,
        pairs: Sequence[tuple[ClusterPod, ClusterPod]],
        *,
        ports: Sequence[int] = PORTS,
        protos: Sequence[Proto] | None = None,
        timeout_s: float = 1.0,
    ) -> dict[tuple[str, str, int, str], Outcome]:
        """Real connections for every (from, to) pair on every port and protocol."""
        keys = [(s, d, port, p) for s, d in pairs for port in ports for p in (protos or self.protocols)]
        probes = [
            Probe(source_netns=s.netns, address=str(d.ip), port=port, protocol=p) for s, d, port, p in keys
        ]
        outcomes = probe_all(probes, timeout_s=timeout_s)
        return {
            (s.label, d.label, port, p.value): o for (s, d, port, p), o in zip(keys, outcomes, strict=True)
        }
