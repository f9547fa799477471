"""The product under its real client: containerd's CRI runs pod sandboxes on testbed nodes through the bundled
`aws-cni` shim, the conflist the agent installs (aws-cni chained with the reference portmap) and the real
`aws-k8s-agent` (ipamd) running in each node namespace against the testbed's EC2 and IMDS.

Checked with real packets and the product's own views: every pod gets a VPC address EC2 assigned to the node,
pods reach each other on one node and across nodes and reach a VPC host, a hostPort reaches a pod from another
node and from the VPC host, and stop/remove leaves no address (introspection), checkpoint entry, rule, route,
link or port mapping behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.cri import Containerd, CriClient, PodSandbox, PodSpec, PortMapping, podnet
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import ping, tcp_echo
from vpccni.testbed.noderunner import NETWORK_NAME, NodeRunner, build_shim

IP = ipaddress.IPv4Address
CONTAINER_PORT = 8080
HOST_PORT = 18080
# Quick pool loops so a test does not wait on upstream's 5-60 s timers.
AGENT_ENV = {
    "IP_COOLDOWN_PERIOD": "1",
    "VPCCNI_POOL_MONITOR_INTERVAL": "1",
    "VPCCNI_POOL_DECREASE_INTERVAL": "1",
    "VPCCNI_RECONCILE_INTERVAL": "2",
    "VPCCNI_MIN_ENI_AGE": "1",
    "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG",
}


@dataclass
class Host:
    """One testbed node with the product (agent + shim + conflist) and containerd as its runtime."""

    node: Node
    runner: NodeRunner
    containerd: Containerd
    cri: CriClient

    def run(self, name: str, *ports: PortMapping) -> PodSandbox:
        sandbox = self.cri.status(self.cri.run_pod(PodSpec(name=name, port_mappings=ports)))
        assert sandbox.ready and isinstance(sandbox.ip, IP) and sandbox.netns_path is not None, sandbox
        return sandbox

    def gone(self, sandbox_id: str) -> None:
        self.cri.stop_pod(sandbox_id)
        self.cri.remove_pod(sandbox_id)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(ClusterConfig())
    try:
        c.start()
        c.add_node()
        c.add_node()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def hosts(cluster: Cluster) -> Iterator[list[Host]]:
    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-cri-") as tmp, contextlib.ExitStack() as stack:
        shim = build_shim(Path(tmp) / "bin")
        made: list[Host] = []
        for node in cluster.nodes:
            runner = NodeRunner(node=node, workdir=Path(tmp) / node.name, shim=shim, env=AGENT_ENV)
            stack.callback(runner.close)
            runner.start()
            # containerd reads the conflist where the agent installs it once it serves; stopping containerd
            # removes every sandbox first (before the agent stops), so the agent sees each DEL.
            containerd = stack.enter_context(
                Containerd(netns_path=node.netns_path, cni_conf_dir=runner.confdir)
            )
            containerd.install_plugin("aws-cni", shim)
            containerd.link_reference_plugins("portmap")
            containerd.wait_network_ready(network=NETWORK_NAME)
            cri = stack.enter_context(containerd.client())
            made.append(Host(node=node, runner=runner, containerd=containerd, cri=cri))
        yield made


# --- the product's views of one pod ----------------------------------------------------------------------


def _assigned(runner: NodeRunner) -> dict[IP, str]:
    """Introspection: each assigned address -> "<namespace>/<pod name>" (upstream blanks the containerID in
    this view since v1.23, so nobody can forge a DelNetwork from it)."""
    out: dict[IP, str] = {}
    for card in runner.introspect("/v1/enis").values():
        for eni in card["ENIs"].values():
            for cidr in eni["AvailableIPv4Cidrs"].values():
                for address, entry in cidr["IPAddresses"].items():
                    if entry["IPAMKey"]["networkName"]:
                        meta = entry["IPAMMetadata"]
                        out[IP(address)] = f"{meta['k8sPodNamespace']}/{meta['k8sPodName']}"
    return out


def _checkpointed(runner: NodeRunner) -> dict[str, IP]:
    """The checkpoint file (vpc-cni-ipam/1): containerID -> address."""
    doc = json.loads(runner.checkpoint.read_text())
    return {a["containerID"]: IP(a["ipv4"]) for a in doc.get("allocations") or []}


def _ec2_addresses(cluster: Cluster, node: Node) -> set[IP]:
    """Every private address EC2 has on the node's ENIs (secondary IPs; prefixes expanded)."""
    enis = cluster.cloud.ec2_client().describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [node.instance.instance_id]}]
    )["NetworkInterfaces"]
    out = {IP(a["PrivateIpAddress"]) for eni in enis for a in eni["PrivateIpAddresses"]}
    for eni in enis:
        for prefix in eni.get("Ipv4Prefixes", []):
            out |= set(ipaddress.IPv4Network(prefix["Ipv4Prefix"]))
    return out


def _node_state(node: Node, ip: IP) -> dict[str, list[str]]:
    """What the node namespace holds for `ip`: rules, routes (all tables), NAT rules (by the pod's IP)."""

    def lines(*argv: str) -> list[str]:
        return [line for line in ns.exec_in_netns(node.netns, list(argv)).splitlines() if str(ip) in line]

    return {
        "rules": lines("ip", "rule", "show"),
        "routes": lines("ip", "route", "show", "table", "all"),
        "nat": lines("iptables-save", "-t", "nat"),
    }


def _host_veth(namespace: str, name: str) -> str:
    """Upstream's host-side veth name: `eni` + sha1("<namespace>.<name>")[:11]."""
    return "eni" + hashlib.sha1(f"{namespace}.{name}".encode()).hexdigest()[:11]


def _plugin_commands(runner: NodeRunner, sandbox_id: str) -> list[str]:
    """The CNI commands the shim logged for one sandbox, in order."""
    out = []
    for line in runner.plugin_log.read_text().splitlines():
        record: dict[str, Any] = json.loads(line)
        if record.get("msg") == "done" and record.get("containerID", sandbox_id) == sandbox_id:
            out.append(str(record.get("command")))
    return out


# --- tests -----------------------------------------------------------------------------------------------


def test_pods_get_vpc_addresses_and_reach_each_other_and_a_vpc_host(
    cluster: Cluster, hosts: list[Host]
) -> None:
    one, two = hosts
    a, b, c = one.run("a"), one.run("b"), two.run("c")
    try:
        for host, sandbox in ((one, a), (one, b), (two, c)):
            assert sandbox.ip in host.node.instance.subnet_cidr
            assert sandbox.ip in _ec2_addresses(cluster, host.node), (
                "the pod's address is EC2's, on this node"
            )
            assert _assigned(host.runner)[sandbox.ip] == f"default/{sandbox.name}"  # type: ignore[index]
            assert _checkpointed(host.runner)[sandbox.id] == sandbox.ip
            assert [i.ip for i in podnet.addresses(sandbox.netns_path)] == [sandbox.ip]  # type: ignore[arg-type]
        assert a.netns_path is not None
        assert podnet.ping(a.netns_path, b.ip), "pod to pod on one node"  # type: ignore[arg-type]
        assert podnet.ping(a.netns_path, c.ip), "pod to pod across nodes"  # type: ignore[arg-type]
        assert podnet.ping(a.netns_path, cluster.vpc_host_ip), "pod to a VPC host"
        assert ping(cluster.datapath.config.netns_name("vpchost"), c.ip), "a VPC host to a pod"
    finally:
        for host, sandbox in ((one, a), (one, b), (two, c)):
            host.gone(sandbox.id)


def test_host_port_through_the_chained_portmap_plugin(cluster: Cluster, hosts: list[Host]) -> None:
    one, two = hosts
    web = one.run("web", PortMapping(container_port=CONTAINER_PORT, host_port=HOST_PORT))
    try:
        assert web.netns_path is not None and isinstance(web.ip, IP)
        node_ip = one.node.instance.primary_ip
        with podnet.echo_server(web.netns_path, web.ip, CONTAINER_PORT):
            from_node = tcp_echo(two.node.netns, node_ip, HOST_PORT)
            from_vpc_host = tcp_echo(cluster.datapath.config.netns_name("vpchost"), node_ip, HOST_PORT)
        # portmap masquerades only hairpin and localhost traffic: the pod sees who connected.
        assert from_node == str(two.node.instance.primary_ip)
        assert from_vpc_host == str(cluster.vpc_host_ip)
    finally:
        one.gone(web.id)
    assert not any(str(HOST_PORT) in line for line in _nat_lines(one.node)), "the port mapping is removed"


def test_stop_and_remove_leave_nothing_behind(hosts: list[Host]) -> None:
    one, _ = hosts
    sandbox = one.run("short-lived", PortMapping(container_port=80, host_port=18081))
    assert isinstance(sandbox.ip, IP)
    veth = _host_veth("default", "short-lived")
    before = _node_state(one.node, sandbox.ip)
    assert before["rules"] and before["routes"] and before["nat"], before
    assert veth in one.node.network.links()

    one.cri.stop_pod(sandbox.id)
    # DEL at stop: everything the pod had on the node is gone already, and the address is free.
    assert _node_state(one.node, sandbox.ip) == {"rules": [], "routes": [], "nat": []}
    assert veth not in one.node.network.links()
    assert sandbox.ip not in _assigned(one.runner)
    assert sandbox.id not in _checkpointed(one.runner)

    one.cri.remove_pod(sandbox.id)  # a second DEL, without a netns: idempotent
    assert sandbox.id not in one.cri.list_pods()
    assert _node_state(one.node, sandbox.ip) == {"rules": [], "routes": [], "nat": []}
    assert sandbox.ip not in _assigned(one.runner)
    assert sandbox.netns_path is not None and not sandbox.netns_path.exists()
    assert _plugin_commands(one.runner, sandbox.id) == ["ADD", "DEL", "DEL"]


def _nat_lines(node: Node) -> list[str]:
    return subprocess.run(
        ["ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
