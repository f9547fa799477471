"""The real aws-k8s-agent and the testbed's Kubernetes API server: ipamd does not depend on it to start or to
serve, and it catches up when the server comes back (upstream since v1.19)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from vpccni.testbed.cluster import Cluster, Node
from vpccni.testbed.kube import CNINODES, ENICONFIGS, PODS, KubeApiServer

if TYPE_CHECKING:
    from conftest import Agent


@pytest.fixture
def kube(cluster: Cluster) -> Iterator[KubeApiServer]:
    assert cluster.kube is not None
    try:
        yield cluster.kube
    finally:
        cluster.kube.set_available(True)


def reached_since(kube: KubeApiServer, seen: int, node: Node) -> bool:
    """The agent asked the API server about its node after request number `seen`."""
    return any(node.k8s_node_name in path for _, path in list(kube.request_log)[seen:])


def test_starts_and_serves_without_the_api_server_then_catches_up(
    kube: KubeApiServer, node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    kube.set_available(False)
    agent = make_agent(VPCCNI_API_SERVER_WAIT="1")
    assert 'success="true",with_api_server="false"' in agent.metrics()
    ip = agent.add_ok("p0")
    assert agent.ec2_owns(ip)

    seen = len(kube.request_log)
    kube.set_available(True)
    wait_for(lambda: reached_since(kube, seen, node), what="the agent to reach the API server again")
    watch = f"fieldSelector=spec.nodeName%3D{node.k8s_node_name}"
    wait_for(
        lambda: any(watch in path for _, path in list(kube.request_log)[seen:]),
        what="the agent's pod watch for its node",
    )
    assert agent.add_ok("p1") != ip


def test_an_api_server_outage_does_not_stop_allocation(
    kube: KubeApiServer, node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent()
    assert 'success="true",with_api_server="true"' in agent.metrics()
    kube.set_available(False, mode="reset")
    ips = [agent.add_ok(f"p{i}") for i in range(12)]  # more than the primary ENI holds: EC2 work too
    assert len(set(ips)) == 12 and all(agent.ec2_owns(ip) for ip in ips)
    assert agent.delete("p0").Success

    seen = len(kube.request_log)
    kube.set_available(True)
    wait_for(lambda: reached_since(kube, seen, node), what="the agent to reach the API server again")
    assert agent.health() == 1


@pytest.fixture
def eniconfig(cluster: Cluster, kube: KubeApiServer) -> Iterator[str]:
    """ENIConfig `default` for pods in the second testbed subnet (10.0.16.0/20)."""
    subnet = cluster.cloud.subnet_ids[1]
    spec = {"subnet": subnet, "securityGroups": [cluster.cloud.security_group_id]}
    kube.store.create(ENICONFIGS, {"metadata": {"name": "default"}, "spec": spec})
    try:
        yield subnet
    finally:
        kube.store.delete(ENICONFIGS, "default")


def test_custom_networking_puts_pods_in_the_eniconfig_subnet(
    kube: KubeApiServer, node: Node, eniconfig: str, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent(AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true")
    assert agent.introspect("/v1/eni-configs") == "default"
    cninode = kube.store.get(CNINODES, node.k8s_node_name)
    assert {"name": "CustomNetworking", "value": "default"} in cninode["spec"]["features"]

    ips = [agent.add_ok(f"p{i}") for i in range(3)]
    pod_subnet = ipaddress.IPv4Network("10.0.16.0/20")
    assert all(ip in pod_subnet for ip in ips)
    enis = agent.ec2_enis()
    assert {e["SubnetId"] for i, e in enis.items() if i != node.instance.primary_eni_id} == {eniconfig}
    assert not agent.introspected_cidrs()[node.instance.primary_eni_id], "the primary ENI serves no pods"


def test_custom_networking_without_an_eniconfig_fails_with_what_to_create(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(start=False, AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true")
    agent.start(wait=False)
    assert agent.proc is not None
    assert agent.proc.wait(60) == 1
    assert "ENIConfig 'default'" in agent.log_tail() and "does not exist" in agent.log_tail()


def test_annotate_pod_ip_writes_the_address_on_add_and_clears_it_on_del(
    kube: KubeApiServer, node: Node, make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    """ANNOTATE_POD_IP=true: the pod object carries `vpc.amazonaws.com/pod-ips` (upstream, for Calico)."""
    pod = {"metadata": {"name": "annotated"}, "spec": {"nodeName": node.k8s_node_name, "containers": []}}
    kube.store.create(PODS, pod, namespace="default")
    try:
        agent = make_agent(ANNOTATE_POD_IP="true")

        def annotation() -> str | None:
            obj = kube.store.get(PODS, "annotated", "default")
            value: str | None = obj["metadata"].get("annotations", {}).get("vpc.amazonaws.com/pod-ips")
            return value

        ip = agent.add_ok("annotated")
        wait_for(lambda: annotation() == str(ip), what="the pod-ips annotation")
        assert agent.delete("annotated").Success
        wait_for(lambda: annotation() == "", what="the annotation cleared on DEL")
    finally:
        kube.store.delete(PODS, "annotated", "default")
