"""The CNI endpoint's service with networkutils' REAL PodWiring over its in-memory netlink fake (no root)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.version import VERSION
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, secondary_ips
from vpccni.networkutils.model import MAIN_TABLE, Route, Rule, Scope
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.pod import PodWiring
from vpccni.networkutils.testing import FakeNetnsNetlink, FakeNetwork


def _request(command: str, container: str, **conf: object) -> Request:
    return Request(
        version=VERSION, command=command, container_id=container, ifname="eth0", netns_path="/n",
        has_netns_fd=command in ("ADD", "CHECK"), k8s_args=K8sArgs(pod_name=container, pod_namespace="ns"),
        netconf={"cniVersion": "1.1.0", "name": "aws-cni", **conf}, cni_version="1.1.0",
    )  # fmt: skip


@pytest.fixture
def world():
    network = FakeNetwork()
    _, host = network.add_namespace("node")
    allocator = FakeAllocator(secondary_ips("10.0.1.10", 3, route_table=2))
    service = CniService(
        allocator=allocator,
        network=PodWiring(host=host, namespaces=FakeNetnsNetlink(network)),
        host_rules=NetlinkHostPodRules(host),
        is_host_netns=lambda fd: False,
    )
    return network, host, allocator, service


def _pod_rules(host) -> set[str]:
    return {str(r) for r in host.rules() if r.priority in (512, 1536)}


def test_add_check_del(world) -> None:
    network, host, allocator, service = world
    fd, pod = network.add_namespace("pod")
    result = service.handle(_request("ADD", "web"), fd)
    assert isinstance(result, dict) and result["ips"] == [{"address": "10.0.1.10/32", "interface": 1}]
    assert host.link(host_veth_name("ns", "web")) is not None
    assert _pod_rules(host) == {
        "from all to 10.0.1.10 lookup main prio 512",
        "from 10.0.1.10 lookup 2 prio 1536",
    }
    service.handle(_request("CHECK", "web"), fd)
    pod.delete_route(Route(dst=IPv4Network("0.0.0.0/0"), gateway=IPv4Address("169.254.1.1"), ifname="eth0",
                           table=MAIN_TABLE, scope=Scope.UNIVERSE))  # fmt: skip
    with pytest.raises(CNIError) as info:
        service.handle(_request("CHECK", "web"), fd)
    assert info.value.code == ErrorCode.INTERNAL and "default" in info.value.msg
    service.handle(_request("DEL", "web"), None)
    assert _pod_rules(host) == set()
    assert host.link(host_veth_name("ns", "web")) is None
    assert pod.link("eth0") is None
    assert allocator.allocations() == ()


def test_gc_removes_rules_no_pod_owns(world) -> None:
    network, host, allocator, service = world
    fd, _ = network.add_namespace("pod")
    service.handle(_request("ADD", "keep"), fd)
    host.add_rule(Rule(priority=512, table=MAIN_TABLE, dst=IPv4Network("10.0.1.99/32")))
    host.add_rule(Rule(priority=1536, table=3, src=IPv4Network("10.0.1.99/32")))
    gc = _request("GC", "", **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    service.handle(gc, None)
    assert _pod_rules(host) == {
        "from all to 10.0.1.10 lookup main prio 512",
        "from 10.0.1.10 lookup 2 prio 1536",
    }
    assert len(allocator.allocations()) == 1
