"""NodeRunner: the real agent, shim and conflist on a testbed node; a pod through ADD, CHECK and DEL."""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from vpccni.testbed.cluster import Cluster
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.noderunner import NodeRunner, build_shim

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRunner]:
    tmp = tmp_path_factory.mktemp("noderunner")
    with Cluster() as cluster:
        node = cluster.add_node(instance_type="m5.large")
        r = NodeRunner(node=node, workdir=tmp / node.name, shim=build_shim(tmp / "bin"))
        try:
            r.start()
            yield r
        finally:
            r.close()


def test_conflist_points_the_shim_at_this_agent(runner: NodeRunner) -> None:
    conflist = json.loads(runner.conflist.read_text())
    plugin = conflist["plugins"][0]
    assert plugin["type"] == "aws-cni"
    assert plugin["cniSocket"] == str(runner.cni_socket)
    assert os.readlink(runner.shim).startswith(".vpccni/")  # the standalone build, as the image installs it
    config = runner.plugin_config({"cniVersion": "0.4.0"})
    assert (config["cniVersion"], config["name"]) == (conflist["cniVersion"], conflist["name"])
    assert config["prevResult"] == {"cniVersion": "0.4.0"}


def test_pod_add_check_del_through_the_shim(runner: NodeRunner) -> None:
    pod = runner.create_pod(namespace="team-a", name="api-0")
    added = runner.add(pod)
    assert added.ok, added.error
    ip = ipaddress.IPv4Interface(added.document["ips"][0]["address"])
    assert ip.network.prefixlen == 32
    pod_addresses = ns.exec_in_netns(pod.netns, ["ip", "-4", "-o", "addr", "show", "eth0"])
    assert f"{ip.ip}/32" in pod_addresses
    enis = runner.introspect("/v1/enis")["0"]
    assert enis["AssignedIPs"] == 1
    assert runner.check(pod).ok

    deleted = runner.delete(pod)
    assert deleted.ok, deleted.error
    assert runner.introspect("/v1/enis")["0"]["AssignedIPs"] == 0
    assert runner.delete(pod).ok, "a repeated DEL succeeds"
    runner.remove_pod(pod)
    assert not Path(pod.netns_path).exists()


def test_add_error_comes_back_as_cni_json(runner: NodeRunner) -> None:
    pod = runner.create_pod(namespace="team-a", name="gone")
    runner.remove_pod(pod)  # the sandbox's namespace vanished before ADD
    outcome = runner.add(pod)
    assert not outcome.ok
    assert isinstance(outcome.document.get("code"), int)
    assert outcome.error.startswith("CNI error")


def test_agent_is_measurable_and_serves_metrics(runner: NodeRunner) -> None:
    rss = runner.rss_mib()
    assert rss is not None and rss > 10
    assert "awscni_total_ip_addresses" in runner.metrics()
