"""Defects `nox -s chaos` found in the real agent, each reproduced on its own; all fixed: regressions now.

- An ENI that EC2 attaches after node init listed the node's ENIs (the AttachNetworkInterface of an agent
  killed a moment before completes late) is never adopted while ADDs wait: the pool manager creates, fails
  to attach (device index taken, then AttachmentLimitExceeded) and deletes an ENI every second, and the
  reconciler, which would find the ENI in IMDS, is skipped for as long as an ADD waits on the pool.
- A checkpoint temporary file (`ipam.json.tmp*`) left by a kill in the middle of a write stays in
  /var/run/aws-node for good: every such crash leaks a file.
- A malformed message on ipamd.sock makes grpcio log "Exception deserializing message!" with a traceback
  into ipamd's log: any local client can fill the log with tracebacks.
- A SIGKILL between an ADD's wiring and its checkpoint write (the write overlaps the wiring) leaves the
  pod's ip rules (512 to the pod, 1536 from it) with no record of them: a restart removes the rules of
  checkpoint entries it drops, never rules of an address no allocation holds (CNI GC would, restarts do
  not), so they stay until that address is given to a pod again.
- While IMDS refuses connections, every reconcile logs "pool iteration failed" with a traceback, and the
  housekeeping round "housekeeping failed": an expected cloud error (the message already says what to
  check) written as a crash, every few seconds.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from vpccni.testbed.cluster import Cluster, Node
from vpccni.testbed.datapath import namespaces as ns

if TYPE_CHECKING:
    from conftest import Agent

INSTANCE_TAG = "node.k8s.amazonaws.com/instance_id"


def test_an_eni_attached_late_is_adopted_while_adds_wait(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent]
) -> None:
    # The upstream reconcile interval: an agent must not need an idle minute to see its own ENIs.
    agent = make_agent(VPCCNI_RECONCILE_INTERVAL="60")
    ec2 = cluster.cloud.ec2_client()
    instance = node.instance.instance_id
    eni = ec2.create_network_interface(
        SubnetId=node.instance.subnet_id,
        Description=f"aws-K8S-{instance}",
        SecondaryPrivateIpAddressCount=9,
        TagSpecifications=[
            {"ResourceType": "network-interface", "Tags": [{"Key": INSTANCE_TAG, "Value": instance}]}
        ],
    )["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=instance, DeviceIndex=2)
    late = {ipaddress.IPv4Address(a["PrivateIpAddress"]) for a in _addresses(ec2, eni)}
    known = [agent.add_ok(f"k{i}") for i in range(18)]  # the two ENIs node init set up (9 + 9 on m5.large)
    assert len(set(known)) == 18 and not set(known) & late

    got: dict[str, ipaddress.IPv4Address | None] = {}

    def add(pod: str) -> None:
        try:
            got[pod] = agent.add_ok(pod, timeout_s=45)
        except AssertionError:
            got[pod] = None

    waiting = [threading.Thread(target=add, args=(f"w{i}",)) for i in range(3)]
    for thread in waiting:
        thread.start()
    for thread in waiting:
        thread.join(timeout=60)
    assert len(got) == 3 and set(got.values()) <= late, f"pods waiting for addresses got {got}"  # type: ignore[operator]


def test_enis_an_earlier_run_created_and_never_attached_are_deleted_at_start(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent]
) -> None:
    ec2 = cluster.cloud.ec2_client()
    instance = node.instance.instance_id

    def created(owner: str) -> str:
        return str(
            ec2.create_network_interface(
                SubnetId=node.instance.subnet_id,
                Description=f"aws-K8S-{owner}",
                TagSpecifications=[
                    {"ResourceType": "network-interface", "Tags": [{"Key": INSTANCE_TAG, "Value": owner}]}
                ],
            )["NetworkInterface"]["NetworkInterfaceId"]
        )

    # What a kill between CreateNetworkInterface and AttachNetworkInterface leaves, seconds old.
    mine, another_nodes = created(instance), created("i-0another")
    make_agent()
    left = {e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces()["NetworkInterfaces"]}
    assert mine not in left and another_nodes in left  # the other node's goes to the hourly sweep


def _addresses(ec2: Any, eni: str) -> list[dict[str, Any]]:
    found = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    return [a for a in found["PrivateIpAddresses"] if not a.get("Primary")]


def test_checkpoint_temp_files_a_crash_left_are_removed_at_start(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(start=False)
    agent.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    leftover = agent.checkpoint.parent / f"{agent.checkpoint.name}.tmpa1b2c3d4"
    leftover.write_bytes(b'{"version":"vpc-cni-ipam/1","allocations":[')  # killed mid-write
    agent.start()
    assert not leftover.exists()


def test_a_malformed_grpc_message_writes_no_traceback(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    before = agent.log_file.read_text()
    with grpc.insecure_channel(f"unix:{agent.socket}") as channel:
        call = channel.unary_unary("/rpc.CNIBackend/AddNetwork")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"\xff\xff\xff\xff", timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # the client's error, not ipamd's
    assert agent.health() == 1
    written = agent.log_file.read_text()[len(before) :]
    assert "Traceback (most recent call last)" not in written


def test_an_imds_outage_writes_no_traceback(cluster: Cluster, make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()  # FAST_ENV: the reconciler reads IMDS every 2 s of pool inactivity
    before = agent.log_file.read_text()
    cluster.cloud.set_imds_outage(True)
    try:
        time.sleep(32)  # a housekeeping round (every 30 s) and many reconciles
    finally:
        cluster.cloud.set_imds_outage(False)
    assert agent.health() == 1
    written = agent.log_file.read_text()[len(before) :]
    assert "Traceback (most recent call last)" not in written


def test_pod_rules_no_allocation_holds_are_removed_at_start(
    node: Node, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent()
    free = next(  # a secondary address of the pool that no pod holds
        str(ipaddress.IPv4Network(cidr).network_address)
        for eni in agent.enis()["ENIs"].values()
        for cidr, info in eni["AvailableIPv4Cidrs"].items()
        if cidr.endswith("/32") and not info["IPAddresses"]
    )
    agent.stop(signal.SIGKILL)
    # What the ADD had set up when it was killed: its rules; the sandbox (and veth) went with the runtime.
    ns.exec_in_netns(node.netns, ["ip", "rule", "add", "to", free, "prio", "512", "lookup", "main"])
    ns.exec_in_netns(node.netns, ["ip", "rule", "add", "from", free, "prio", "1536", "lookup", "2"])
    agent.start()
    rules = json.loads(ns.exec_in_netns(node.netns, ["ip", "-j", "-4", "rule", "show"]))
    assert [r for r in rules if free in (r.get("src"), r.get("dst"))] == []
