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
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.cri import Containerd, CriClient, CriError, PodSpec, PortMapping, podnet
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo
from vpccni.testbed.noderunner import NETWORK_NAME, NodeRunner, build_shim

IP = ipaddress.IPv4Address
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root")
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


@dataclass(frozen=True, kw_only=True)
class Pod:
    """A running sandbox as the tests use it."""

    id: str
    name: str
    ip: IP
    netns: Path


@dataclass
class Host:
    """One testbed node with the product (agent + shim + conflist) and containerd as its runtime."""

    node: Node
    runner: NodeRunner
    containerd: Containerd
    cri: CriClient

    def run(
        self, name: str, *ports: PortMapping, retry_s: float = 60.0, annotations: dict[str, str] | None = None
    ) -> Pod:
        """RunPodSandbox, retried while ipamd has no free address yet (kubelet retries a sandbox too)."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                spec = PodSpec(name=name, port_mappings=ports, annotations=annotations or {})
                sandbox_id = self.cri.run_pod(spec)
                break
            except CriError as err:
                if "no available IP" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        sandbox = self.cri.status(sandbox_id)
        assert sandbox.ready and isinstance(sandbox.ip, IP) and sandbox.netns_path is not None, sandbox
        return Pod(id=sandbox.id, name=sandbox.name, ip=sandbox.ip, netns=sandbox.netns_path)

    def gone(self, sandbox_id: str) -> None:
        self.cri.stop_pod(sandbox_id)
        self.cri.remove_pod(sandbox_id)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(ClusterConfig()) as two_nodes:
        two_nodes.add_node()
        two_nodes.add_node()
        yield two_nodes


def _start_host(stack: contextlib.ExitStack, node: Node, *, workdir: Path, shim: Path, **env: str) -> Host:
    """The agent on `node`, then containerd reading the conflist where the agent installs it once it
    serves. Unwinding `stack` stops containerd first, which removes every sandbox: the agent sees each DEL."""
    runner = NodeRunner(node=node, workdir=workdir, shim=shim, env={**AGENT_ENV, **env})
    stack.callback(runner.close)
    runner.start()
    containerd = stack.enter_context(Containerd(netns_path=node.netns_path, cni_conf_dir=runner.confdir))
    containerd.install_chain(shim)
    containerd.wait_network_ready(network=NETWORK_NAME)
    cri = stack.enter_context(containerd.client())
    return Host(node=node, runner=runner, containerd=containerd, cri=cri)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-cri-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def shim(workdir: Path) -> Path:
    return build_shim(workdir / "bin")


@pytest.fixture(scope="module")
def hosts(cluster: Cluster, workdir: Path, shim: Path) -> Iterator[list[Host]]:
    with contextlib.ExitStack() as stack:
        yield [_start_host(stack, node, workdir=workdir / node.name, shim=shim) for node in cluster.nodes[:2]]


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


def _on_primary_eni(runner: NodeRunner, ip: IP) -> bool:
    """Whether introspection places `ip` on the node's primary ENI (eth0)."""
    for card in runner.introspect("/v1/enis").values():
        for eni in card["ENIs"].values():
            if any(ip in ipaddress.IPv4Network(c) for c in eni["AvailableIPv4Cidrs"]):
                return bool(eni["IsPrimary"])
    raise AssertionError(f"{ip} is on no ENI ipamd knows")


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

    exact = re.compile(rf"(?<![\d.]){re.escape(str(ip))}(?![\d])")

    def lines(*argv: str) -> list[str]:
        return [line for line in ns.exec_in_netns(node.netns, list(argv)).splitlines() if exact.search(line)]

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
            assert _assigned(host.runner)[sandbox.ip] == f"default/{sandbox.name}"
            assert _checkpointed(host.runner)[sandbox.id] == sandbox.ip
            assert [i.ip for i in podnet.addresses(sandbox.netns)] == [sandbox.ip]
        assert podnet.ping(a.netns, b.ip), "pod to pod on one node"
        assert podnet.ping(a.netns, c.ip), "pod to pod across nodes"
        assert podnet.ping(a.netns, cluster.vpc_host_ip), "pod to a VPC host"
        assert ping(cluster.datapath.config.netns_name("vpchost"), c.ip), "a VPC host to a pod"
        with EchoServer(netns=cluster.datapath.config.netns_name("inet"), ip=cluster.internet_ip) as internet:
            seen = podnet.tcp_echo(b.netns, cluster.internet_ip, internet.port)
        assert seen == str(one.node.instance.primary_ip), "pod to the internet, SNAT to the node's address"
    finally:
        for host, sandbox in ((one, a), (one, b), (two, c)):
            host.gone(sandbox.id)


def test_concurrent_sandboxes_get_distinct_addresses(cluster: Cluster, hosts: list[Host]) -> None:
    """kubelet starts pods in parallel: concurrent RunPodSandbox calls run concurrent shims against ipamd."""
    one, _ = hosts
    with ThreadPoolExecutor(max_workers=6) as pool:
        pods = list(pool.map(lambda i: one.run(f"burst-{i}"), range(6)))
    try:
        assert len({p.ip for p in pods}) == len(pods)
        assigned = _assigned(one.runner)
        assert all(assigned[p.ip] == f"default/{p.name}" for p in pods)
        assert all(podnet.ping(p.netns, cluster.vpc_host_ip) for p in pods)
    finally:
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(lambda p: one.gone(p.id), pods))
    assigned = _assigned(one.runner)
    assert not any(p.ip in assigned for p in pods)


def test_host_port_through_the_chained_portmap_plugin(cluster: Cluster, hosts: list[Host]) -> None:
    one, two = hosts
    web = one.run("web", PortMapping(container_port=CONTAINER_PORT, host_port=HOST_PORT))
    try:
        node_ip = one.node.instance.primary_ip
        with podnet.echo_server(web.netns, web.ip, CONTAINER_PORT):
            from_node = tcp_echo(two.node.netns, node_ip, HOST_PORT)
            from_vpc_host = tcp_echo(cluster.datapath.config.netns_name("vpchost"), node_ip, HOST_PORT)
        # portmap masquerades only hairpin and localhost traffic: the pod sees who connected.
        assert from_node == str(two.node.instance.primary_ip)
        assert from_vpc_host == str(cluster.vpc_host_ip)
    finally:
        one.gone(web.id)
    assert not any(str(HOST_PORT) in line for line in _nat_lines(one.node)), "the port mapping is removed"


def test_host_port_to_pods_on_the_primary_and_a_secondary_eni(cluster: Cluster, hosts: list[Host]) -> None:
    """Replies of a pod on a secondary ENI to a hostPort client must leave through eth0, where the connection
    came in (upstream's connmark rules); otherwise the VPC's source/destination check drops them."""
    one, two = hosts
    pods: list[Pod] = []
    try:
        # Fill the node until pods sit on both kinds of ENI (the pool attaches a second ENI as demand grows).
        while len({_on_primary_eni(one.runner, p.ip) for p in pods}) < 2:
            assert len(pods) < 20, "twenty pods and still one kind of ENI"
            pods.append(
                one.run(f"filler-{len(pods)}", PortMapping(container_port=80, host_port=18100 + len(pods)))
            )
        for index, pod in enumerate(pods):
            if index not in (0, len(pods) - 1):
                continue  # one pod of each kind: the first and the last
            with podnet.echo_server(pod.netns, pod.ip, 80):
                seen = tcp_echo(two.node.netns, one.node.instance.primary_ip, 18100 + index)
            where = "primary" if _on_primary_eni(one.runner, pod.ip) else "secondary"
            assert seen == str(two.node.instance.primary_ip), f"hostPort to a pod on the {where} ENI"
    finally:
        for pod in pods:
            one.gone(pod.id)


def test_stop_and_remove_leave_nothing_behind(hosts: list[Host]) -> None:
    one, _ = hosts
    sandbox = one.run("short-lived", PortMapping(container_port=80, host_port=18081))
    veth = _host_veth("default", "short-lived")
    before = _node_state(one.node, sandbox.ip)
    assert before["rules"] and before["routes"] and before["nat"], before
    assert veth in one.node.network.links()

    one.cri.stop_pod(sandbox.id)
    # DEL at stop: everything the pod had on the node is gone already, and the address is free.
    assert _node_state(one.node, sandbox.ip) == {"rules": [], "routes": [], "nat": []}
    # The veth dies with the pod's namespace, which the kernel destroys asynchronously after containerd
    # deletes it: give it a moment.
    deadline = time.monotonic() + 5
    while veth in one.node.network.links() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert veth not in one.node.network.links()
    assert sandbox.ip not in _assigned(one.runner)
    assert sandbox.id not in _checkpointed(one.runner)

    one.cri.remove_pod(sandbox.id)  # a second DEL, without a netns: idempotent
    assert sandbox.id not in one.cri.list_pods()
    assert _node_state(one.node, sandbox.ip) == {"rules": [], "routes": [], "nat": []}
    assert sandbox.ip not in _assigned(one.runner)
    assert not sandbox.netns.exists()
    assert _plugin_commands(one.runner, sandbox.id) == ["ADD", "DEL", "DEL"]


def test_pods_outlive_an_agent_restart_and_dels_made_meanwhile_are_not_lost(
    cluster: Cluster, hosts: list[Host]
) -> None:
    _, two = hosts
    kept, gone = two.run("kept"), two.run("gone-while-down")
    two.runner.stop()
    try:
        with pytest.raises(CriError, match="cannot reach ipamd: is aws-node running"):
            two.cri.run_pod(PodSpec(name="while-down"))
        # DEL with ipamd down: the shim queues it and reports success, so the runtime can go on.
        two.cri.stop_pod(gone.id)
        two.cri.remove_pod(gone.id)
        assert two.cri.list_pods() == [kept.id]
        assert _queued_dels(two.runner), "the DELs wait in the queue"
        assert podnet.ping(kept.netns, cluster.vpc_host_ip), "the datapath does not need the agent"
    finally:
        two.runner.start()

    # At start ipamd restored `kept` from the checkpoint and finished the queued DELs.
    assigned = _assigned(two.runner)
    assert assigned.get(kept.ip) == "default/kept"
    assert gone.ip not in assigned
    assert set(_checkpointed(two.runner)) == {kept.id}
    assert _node_state(two.node, gone.ip) == {"rules": [], "routes": [], "nat": []}
    assert _queued_dels(two.runner) == []
    assert podnet.ping(kept.netns, cluster.vpc_host_ip)

    two.gone(kept.id)
    assert kept.ip not in _assigned(two.runner)
    assert _node_state(two.node, kept.ip) == {"rules": [], "routes": [], "nat": []}


def _queued_dels(runner: NodeRunner) -> list[Path]:
    """Entries of the shim's on-disk DEL queue (its directory comes from the installed conflist)."""
    queue = Path(json.loads(runner.conflist.read_text())["plugins"][0]["delQueueDir"])
    return sorted(queue.iterdir()) if queue.is_dir() else []


def test_prefix_delegation_pods_take_addresses_of_a_delegated_prefix(
    cluster: Cluster, workdir: Path, shim: Path
) -> None:
    """ENABLE_PREFIX_DELEGATION: the pool holds /28 prefixes EC2 delegated to the node's ENIs, pods get
    addresses inside them, and the VPC routes those addresses to the node."""
    node = cluster.add_node()
    try:
        with contextlib.ExitStack() as stack:
            host = _start_host(
                stack, node, workdir=workdir / "prefix-node", shim=shim,
                ENABLE_PREFIX_DELEGATION="true", WARM_PREFIX_TARGET="1",
            )  # fmt: skip
            pods = [host.run(f"pd-{i}") for i in range(3)]
            prefixes = _ec2_prefixes(cluster, node)
            assert prefixes and all(p.prefixlen == 28 for p in prefixes)
            for pod in pods:
                assert any(pod.ip in prefix for prefix in prefixes), f"{pod.ip} is outside {prefixes}"
                assert _assigned(host.runner)[pod.ip] == f"default/{pod.name}"
                assert podnet.ping(pod.netns, cluster.vpc_host_ip)
            assert podnet.ping(pods[0].netns, pods[1].ip)
            for pod in pods:
                host.gone(pod.id)
            assert not any(pod.ip in _assigned(host.runner) for pod in pods)
    finally:
        cluster.remove_node(node)


def test_a_multi_nic_sandbox_gets_an_interface_per_network_card(
    cluster: Cluster, workdir: Path, shim: Path
) -> None:
    """ENABLE_MULTI_NIC on a two-card instance type: containerd hands the pod's annotations to aws-cni (the
    conflist's `io.kubernetes.cri.pod-annotations` capability); a pod annotated
    `k8s.amazonaws.com/nicConfig: multi-nic-attachment` gets eth0 on card 0 and mNicIf1 on card 1, each
    reaching a VPC host from its own address; stop and remove leave nothing of either behind."""
    node = cluster.add_node(instance_type="hpc7a.12xlarge")
    try:
        with contextlib.ExitStack() as stack:
            host = _start_host(stack, node, workdir=workdir / "multi-nic", shim=shim, ENABLE_MULTI_NIC="true")
            plain = host.run("plain")
            pod = host.run("trainer", annotations={"k8s.amazonaws.com/nicConfig": "multi-nic-attachment"})
            second = podnet.addresses(pod.netns, "mNicIf1")
            assert [i.ip for i in podnet.addresses(pod.netns)] == [pod.ip] and len(second) == 1
            enis = host.runner.introspect("/v1/enis")
            on_card = {
                IP(address): card
                for card, infos in enis.items()
                for eni in infos["ENIs"].values()
                for cidr in eni["AvailableIPv4Cidrs"].values()
                for address, entry in cidr["IPAddresses"].items()
                if entry["IPAMMetadata"].get("k8sPodName") == "trainer"
            }
            assert on_card == {pod.ip: "0", second[0].ip: "1"}
            assert [i.ip for i in podnet.addresses(plain.netns)] == [plain.ip] and _on_primary_eni(
                host.runner, plain.ip
            )
            with EchoServer(
                netns=cluster.datapath.config.netns_name("vpchost"), ip=cluster.vpc_host_ip
            ) as echo:
                seen = [
                    tcp_echo(str(pod.netns.resolve()), cluster.vpc_host_ip, echo.port, source=ip)
                    for ip in (pod.ip, second[0].ip)
                ]
            assert seen == [str(pod.ip), str(second[0].ip)]
            for sandbox in (pod, plain):
                host.gone(sandbox.id)
            for ip in (pod.ip, second[0].ip):
                assert _node_state(node, ip) == {"rules": [], "routes": [], "nat": []}
                assert ip not in _assigned(host.runner)
            nic_file = host.runner.checkpoint.with_name(host.runner.checkpoint.stem + "-nic-1.json")
            assert json.loads(nic_file.read_text())["allocations"] == []
    finally:
        cluster.remove_node(node)


def _ec2_prefixes(cluster: Cluster, node: Node) -> list[ipaddress.IPv4Network]:
    enis = cluster.cloud.ec2_client().describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [node.instance.instance_id]}]
    )["NetworkInterfaces"]
    return [ipaddress.IPv4Network(p["Ipv4Prefix"]) for eni in enis for p in eni.get("Ipv4Prefixes", [])]


def _nat_lines(node: Node) -> list[str]:
    return subprocess.run(
        ["ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
