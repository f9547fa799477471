"""An IPv6 pod under containerd's CRI: a testbed node in a dual-stack VPC with the real agent in IPv6 mode,
the conflist it installs (aws-cni, egress-cni, the reference portmap) and the standalone shims.

The sandbox's IP as CRI reports it is the pod's /128 from the node's /80; the pod reaches the IPv6 internet
with its own address and the IPv4 internet as the node's IPv4 address (egress-cni); stopping and removing the
sandbox leaves no address, egress reservation, rule or route behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.cri import Containerd, CriClient, PodSpec
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, tcp_echo
from vpccni.testbed.modes import IPV6_CLUSTER_ENV, dual_stack
from vpccni.testbed.noderunner import NETWORK_NAME, NodeRunner, build_shim

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the e2e tier needs root")


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Cluster, NodeRunner, CriClient]]:
    with tempfile.TemporaryDirectory(prefix="vpccni-e2e-cri6-") as tmp, contextlib.ExitStack() as stack:
        cluster = stack.enter_context(Cluster(ClusterConfig(cloud=dual_stack())))
        node = cluster.add_node()
        shim = build_shim(Path(tmp) / "bin")
        runner = NodeRunner(node=node, workdir=Path(tmp) / node.name, shim=shim, env=dict(IPV6_CLUSTER_ENV))
        stack.callback(runner.close)
        runner.start()
        containerd = stack.enter_context(Containerd(netns_path=node.netns_path, cni_conf_dir=runner.confdir))
        containerd.install_chain(shim, runner.chained())
        containerd.wait_network_ready(network=NETWORK_NAME)
        yield cluster, runner, stack.enter_context(containerd.client())


def test_an_ipv6_sandbox_gets_its_128_and_egress_and_leaves_nothing(
    stack: tuple[Cluster, NodeRunner, CriClient],
) -> None:
    cluster, runner, cri = stack
    plugins = [p["type"] for p in json.loads(runner.conflist.read_text())["plugins"]]
    assert plugins == ["aws-cni", "egress-cni", "portmap"]
    sandbox_id = cri.run_pod(PodSpec(name="web-6", namespace="default"))
    status = cri.status(sandbox_id)
    assert status.ready and isinstance(status.ip, ipaddress.IPv6Address), status
    (prefix,) = runner.introspect("/v1/enis")["0"]["ENIs"][runner.node.instance.primary_eni_id]["IPv6Cidrs"]
    assert status.ip in ipaddress.IPv6Network(prefix)
    assert status.additional_ips == (), "egress-cni's address is the pod's own business, not the sandbox's"
    assert status.netns_path is not None
    name = ns.alias_netns(status.netns_path, f"vpod-cri6-{os.getpid()}")
    try:
        internet6, internet4 = cluster.internet_ip6, cluster.internet_ip
        assert internet6 is not None
        router = cluster.datapath.router
        with EchoServer(netns=router.internet_netns, ip=internet6) as server:
            assert tcp_echo(name, internet6, server.port) == str(status.ip)
        with EchoServer(netns=router.internet_netns, ip=internet4) as server:
            assert tcp_echo(name, internet4, server.port) == str(runner.node.instance.primary_ip)
    finally:
        ns.delete_netns(name)
    cri.stop_pod(sandbox_id)  # CNI DEL of the chain, in reverse
    cri.remove_pod(sandbox_id)
    assert runner.introspect("/v1/enis")["0"]["AssignedIPs"] == 0
    store = runner.state_dir / "egress-ipam" / "aws-cni"
    assert not [p for p in store.iterdir() if p.name[0].isdigit()]
    node_ns = runner.node.netns
    assert str(status.ip) not in ns.exec_in_netns(node_ns, ["ip", "-6", "rule"])
    assert str(status.ip) not in ns.exec_in_netns(node_ns, ["ip", "-6", "route", "show", "table", "all"])
    assert "169.254.172." not in ns.exec_in_netns(node_ns, ["ip", "-4", "route"])
