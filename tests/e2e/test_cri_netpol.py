"""Network policy under the real CNI client: containerd's CRI runs pod sandboxes on two nodes in strict mode,
with the real netpol agent on each and the real controller. A sandbox the runtime starts is denied both ways
until a NetworkPolicy selects it; then the policy decides, with real packets; removing the sandboxes leaves
nothing of them in the agent's table."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from vpccni.networkutils.names import host_veth_name
from vpccni.testbed.cri import Containerd, CriClient, PodSpec, podnet
from vpccni.testbed.kube import PODS
from vpccni.testbed.netpol import daemons
from vpccni.testbed.netpol.cluster import PolicyCluster
from vpccni.testbed.noderunner import NETWORK_NAME
from vpccni.testbed.polling import eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root")
PORT = 8080


@dataclass(frozen=True, kw_only=True)
class Running:
    id: str
    name: str
    node: int
    ip: ipaddress.IPv4Address
    netns: Path


@pytest.fixture(scope="module")
def policy_cluster() -> Iterator[tuple[PolicyCluster, list[CriClient]]]:
    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-netpol-") as tmp, contextlib.ExitStack() as stack:
        pc = stack.enter_context(PolicyCluster(workdir=Path(tmp), nodes=2, mode="strict"))
        pc.create_namespace("shop")
        clients = []
        for runner in pc.runners:
            containerd = stack.enter_context(
                Containerd(netns_path=runner.node.netns_path, cni_conf_dir=runner.confdir)
            )
            containerd.install_chain(runner.shim)
            containerd.wait_network_ready(network=NETWORK_NAME)
            clients.append(stack.enter_context(containerd.client()))
        yield pc, clients


def _run(pc: PolicyCluster, cri: CriClient, node: int, name: str, app: str) -> Running:
    """As kubelet: the scheduled pod object, the runtime's sandbox, then the pod's IP in its status."""
    runner = pc.runners[node]
    manifest = {
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {"nodeName": runner.node.k8s_node_name, "containers": [{"name": "c", "image": "agnhost"}]},
        "status": {"phase": "Pending"},
    }
    obj = pc.store.create(PODS, manifest, "shop")
    sandbox_id = cri.run_pod(PodSpec(name=name, namespace="shop", uid=obj["metadata"]["uid"]))
    status = cri.status(sandbox_id)
    assert status.ready and isinstance(status.ip, ipaddress.IPv4Address) and status.netns_path is not None
    pc.store.patch(
        PODS,
        name,
        {"status": {"phase": "Running", "podIP": str(status.ip), "podIPs": [{"ip": str(status.ip)}]}},
        namespace="shop",
    )
    return Running(id=sandbox_id, name=name, node=node, ip=status.ip, netns=status.netns_path)


def _reaches(src: Running, dst: Running, timeout: float = 1.5) -> bool:
    return podnet.tcp_echo(src.netns, dst.ip, PORT, timeout=timeout) == str(src.ip)


def _table(pc: PolicyCluster, node: int) -> str:
    return str(pc.agents[node].get_json(daemons.AGENT_INTROSPECTION, "/v1/ruleset")["table"])


def test_a_runtime_sandbox_is_denied_until_a_policy_selects_it_then_the_policy_decides(
    policy_cluster: tuple[PolicyCluster, list[CriClient]],
) -> None:
    pc, cri = policy_cluster
    db = _run(pc, cri[0], 0, "db", "db")
    client = _run(pc, cri[1], 1, "client", "client")
    other = _run(pc, cri[1], 1, "other", "web")
    with contextlib.ExitStack() as servers:
        for pod in (db, client, other):
            servers.enter_context(podnet.echo_server(pod.netns, pod.ip, PORT))
        # Strict: the ADD returned only once the agent had the pod, so nothing passes from the first packet.
        assert not _reaches(client, db) and not _reaches(db, client)
        assert f'"{host_veth_name("shop", "db")}"' in _table(pc, 0)  # admitted by the agent, as a strict pod

        pc.apply_policy(
            {
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                            "ports": [{"port": PORT}],
                        }
                    ],
                    "egress": [{}],
                },
            }
        )
        pc.apply_policy(
            {
                "metadata": {"name": "clients", "namespace": "shop"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
            }
        )
        eventually(lambda: _reaches(client, db))
        assert not _reaches(other, db)  # selected by no ingress rule of db's policy

    for pod in (db, client, other):
        cri[pod.node].stop_pod(pod.id)
        cri[pod.node].remove_pod(pod.id)
        pc.store.delete(PODS, pod.name, "shop")
    for policy in ("db", "clients"):
        pc.delete_policy("shop", policy)
    for node, pods in ((0, [db]), (1, [client, other])):
        gone = [f'"{host_veth_name("shop", p.name)}"' for p in pods] + [str(p.ip) for p in pods]
        eventually(lambda n=node, g=gone: all(x not in _table(pc, n) for x in g))
