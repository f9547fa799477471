"""A SIGKILL of the real aws-k8s-agent in the middle of allocations: the restarted agent restores every
acknowledged assignment from the checkpoint, loses none and never hands one address to two pods."""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from vpccni.cniplugin import delqueue, wire
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.version import VERSION
from vpccni.networkutils.names import host_veth_name
from vpccni.testbed.cluster import Node

if TYPE_CHECKING:
    from conftest import Agent

PODS = [f"p{i}" for i in range(24)]  # an m5.large holds 27 pod addresses


def add_host_veths(node: Node, pods: list[str]) -> None:
    """The pods' host veths, as pod wiring would leave them (restore drops pods whose veth is gone, as
    upstream does). The peer ends stay in the node namespace: only the host-side names matter here."""
    for pod in pods:
        veth = host_veth_name("default", pod)
        add = ["ip", "-n", node.netns, "link", "add", veth, "type", "veth", "peer", "name", f"pp{veth[3:]}"]
        subprocess.run(add, check=True)


def assigned_by_pod(agent: Agent) -> dict[str, ipaddress.IPv4Address]:
    """Pod name → address, from introspection (the IPAM key is scrubbed, the pod metadata is not)."""
    out = {}
    for eni in agent.enis()["ENIs"].values():
        for cidr in eni["AvailableIPv4Cidrs"].values():
            for ip, addr in cidr["IPAddresses"].items():
                name = addr["IPAMMetadata"]["k8sPodName"]
                if name:
                    assert name not in out, f"{name} holds two addresses"
                    out[name] = ipaddress.IPv4Address(ip)
    return out


def test_sigkill_mid_allocation_restores_every_assignment(
    node: Node, make_agent: Callable[..., Agent]
) -> None:
    add_host_veths(node, PODS)
    agent = make_agent()
    acknowledged: dict[str, ipaddress.IPv4Address] = {}
    dozen = threading.Event()

    def allocate() -> None:
        for pod in PODS:
            try:
                reply = agent.add(pod, timeout_s=15)
            except grpc.RpcError:
                return  # the agent was killed
            if reply.Success:
                acknowledged[pod] = ipaddress.IPv4Address(reply.IPAllocationMetadata[0].IPv4Addr)
            if len(acknowledged) == 12:
                dozen.set()
            time.sleep(0.05)  # pacing, so the kill lands while allocations are still coming

    worker = threading.Thread(target=allocate)
    worker.start()
    assert dozen.wait(60), f"no dozen allocations:\n{agent.log_tail()}"
    agent.stop(signal.SIGKILL)
    worker.join(timeout=30)
    assert 12 <= len(acknowledged) < len(PODS), "the kill landed mid-allocation"

    agent.start()
    restored = assigned_by_pod(agent)
    for pod, ip in acknowledged.items():
        assert restored.get(pod) == ip, f"{pod} lost {ip} across the restart"
    assert len(set(restored.values())) == len(restored)
    assert all(agent.ec2_owns(ip) for ip in restored.values())
    assert agent.add_ok(next(iter(acknowledged))) == next(iter(acknowledged.values())), "ADD stays idempotent"

    rest = [pod for pod in PODS if pod not in restored]
    new = {pod: agent.add_ok(pod) for pod in rest}
    assert not set(new.values()) & set(restored.values()), "a restored address was handed out again"
    final = assigned_by_pod(agent)
    assert final == {**restored, **new}
    assert len(set(final.values())) == len(PODS)


def test_dels_queued_while_down_are_finished_before_serving(
    node: Node, make_agent: Callable[..., Agent]
) -> None:
    pods = ["q0", "q1", "q2"]
    add_host_veths(node, pods)
    agent = make_agent()
    ips = {pod: agent.add_ok(pod) for pod in pods}
    assert agent.stop(signal.SIGTERM) == 0

    # What the aws-cni shim does when ipamd is unreachable: DEL goes to the on-disk queue, success returned.
    queue = str(agent.run_dir / "del-queue")
    delqueue.enqueue(
        queue,
        wire.Request(
            version=VERSION,
            command="DEL",
            container_id="c-q1",
            ifname="eth0",
            k8s_args=K8sArgs(pod_name="q1", pod_namespace="default", pod_infra_container_id="c-q1"),
            netconf={"cniVersion": "0.4.0", "name": "aws-cni", "type": "aws-cni"},
            cni_version="0.4.0",
        ),
    )
    agent.start()
    assert assigned_by_pod(agent) == {"q0": ips["q0"], "q2": ips["q2"]}
    assert delqueue.pending(queue) == []
