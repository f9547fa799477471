"""The real aws-k8s-agent while the cloud misbehaves: a lagging IMDS never leads to an address the node does
not own (upstream #3887), and EC2 throttling slows allocation without breaking it."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from vpccni.testbed.cluster import Cluster, Node
from vpccni.testbed.noderunner import NodeRunner

if TYPE_CHECKING:
    from conftest import Agent


@pytest.fixture
def lagging_imds(cluster: Cluster) -> Iterator[float]:
    lag = 3.0
    cluster.cloud.set_imds_lag(lag)
    try:
        yield lag
    finally:
        cluster.cloud.set_imds_lag(0.0)


@pytest.fixture
def throttled_ec2(cluster: Cluster) -> Iterator[float]:
    started = time.time()
    cluster.cloud.set_throttle("mutating", capacity=2, refill_per_s=1.0)
    try:
        yield started
    finally:
        cluster.cloud.disable_throttle("mutating")


def test_imds_lag_never_leads_to_a_bad_assignment(
    lagging_imds: float, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(WARM_IP_TARGET="3")

    def add_checked(pod: str) -> ipaddress.IPv4Address:
        ip = agent.add_ok(pod)
        assert agent.ec2_owns(ip), f"{pod} got {ip}, which EC2 has not assigned to this node"
        return ip

    first = {pod: add_checked(pod) for pod in (f"a{i}" for i in range(14))}
    # Churn: released addresses go back to EC2 while the lagging IMDS still lists them; the reconciler
    # must not take them back, and new pods must only get addresses EC2 confirms.
    for pod in list(first)[:10]:
        assert agent.delete(pod).Success
    time.sleep(lagging_imds + 2)  # let decreases and reconciles run against the stale IMDS
    second = [add_checked(f"b{i}") for i in range(10)]
    held = set(second) | {ip for pod, ip in first.items() if pod not in list(first)[:10]}
    assert len(held) == 14, "no address is held by two pods"
    wait_for(lambda: agent.introspected_cidrs() == agent.ec2_cidrs(), what="ipamd and EC2 to agree")


def test_throttling_slows_but_does_not_break_allocation(
    cluster: Cluster, throttled_ec2: float, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent(WARM_IP_TARGET="1")
    ips = [agent.add_ok(f"t{i}", timeout_s=120) for i in range(20)]

    assert len(set(ips)) == len(ips)
    assert all(agent.ec2_owns(ip) for ip in ips)
    throttled = [
        r
        for r in cluster.cloud.call_log
        if r.started >= throttled_ec2 and r.error_code == "RequestLimitExceeded"
    ]
    assert throttled, "the test did not throttle anything"
    assert agent.health() == 1  # still SERVING


def test_a_full_subnet_sends_the_pool_to_another_tagged_subnet(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent]
) -> None:
    # The trial that froze a fresh node for minutes: three InsufficientFreeAddressesInSubnet for the node's
    # subnet while a second subnet tagged kubernetes.io/role/cni=1 had room.
    started = time.time()
    full = node.instance.subnet_id
    cluster.cloud.inject_error(
        "AssignPrivateIpAddresses", "InsufficientFreeAddressesInSubnet", 3, subnet_id=full
    )
    agent = make_agent(WARM_IP_TARGET="5")
    pods = [agent.create_pod(namespace="default", name=f"full-{i}") for i in range(12)]
    through_the_shim = NodeRunner.add  # Agent.add is the upstream gRPC client's AddNetwork
    outcomes = [through_the_shim(agent, pod) for pod in pods]
    codes = [o.document.get("code") for o in outcomes if not o.ok]
    assert all(code == 11 for code in codes), codes  # never the final 999 while the pool can grow
    retried = [through_the_shim(agent, pod) for pod, o in zip(pods, outcomes, strict=True) if not o.ok]
    assert all(o.ok for o in retried), [o.error for o in retried]
    ips = {ipaddress.ip_interface(agent.result_of(pod)["ips"][0]["address"]).ip for pod in pods}
    assert len(ips) == len(pods) and all(agent.ec2_owns(ip) for ip in ips)
    created = [
        r
        for r in cluster.cloud.call_log
        if r.started >= started and r.action == "CreateNetworkInterface" and r.error_code is None
    ]
    assert created and all(r.params.get("SubnetId") != full for r in created), "growth went nowhere else"
    refusals = [
        r
        for r in cluster.cloud.call_log
        if r.started >= started and r.error_code == "InsufficientFreeAddressesInSubnet"
    ]
    assert len(refusals) <= 3
