"""The CNI endpoint's service with networkutils' REAL PodWiring over its in-memory netlink fake (no root)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.version import VERSION
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, secondary_ips
from vpccni.networkutils.model import MAIN_TABLE, Route, Rule, Scope
from vpccni.networkutils.names import attachment_veth_name, host_veth_name
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
        classify_netns=lambda fd: NetnsKind.POD,
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


def _attach(command: str, container: str, ifname: str, pod: str, *, prev: dict | None = None) -> Request:
    conf: dict[str, object] = {"cniVersion": "1.1.0", "name": "aws-cni"}
    if prev is not None:
        conf["prevResult"] = prev
    return Request(
        version=VERSION, command=command, container_id=container, ifname=ifname, netns_path="/n",
        has_netns_fd=command in ("ADD", "CHECK"), netconf=conf, cni_version="1.1.0",
        k8s_args=K8sArgs(pod_name=pod, pod_namespace="ns" if pod else ""),
    )  # fmt: skip


def _host_veths(host) -> set[str]:
    return {link.name for link in host.links() if link.name.startswith("eni")}


def test_a_second_interface_of_a_pod_leaves_the_first_wired(world) -> None:
    network, host, _allocator, service = world
    fd, pod = network.add_namespace("pod")
    first = service.handle(_attach("ADD", "c1", "eth0", "web"), fd)
    second = service.handle(_attach("ADD", "c1", "eth1", "web"), fd)
    assert first["interfaces"][0]["name"] == host_veth_name("ns", "web")  # upstream's name stays for eth0
    # eth1 is interface 1: its own veth name (upstream's for index 1), gateway 169.254.1.2 and pod table 1
    assert second["interfaces"][0]["name"] == host_veth_name("ns", "web", index=1)
    assert _host_veths(host) == {host_veth_name("ns", "web"), host_veth_name("ns", "web", index=1)}
    service.handle(_attach("CHECK", "c1", "eth0", "web", prev=first), fd)
    service.handle(_attach("CHECK", "c1", "eth1", "web", prev=second), fd)
    # GC of eth1 alone (netns not at hand) deletes its veth only
    gc = _request("GC", "", **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]})
    service.handle(gc, None)
    assert _host_veths(host) == {host_veth_name("ns", "web")}
    service.handle(_attach("CHECK", "c1", "eth0", "web", prev=first), fd)
    assert pod.link("eth0") is not None and pod.link("eth1") is None


def test_a_recreated_sandbox_never_takes_the_live_sandboxs_veth(world) -> None:
    network, host, allocator, service = world
    old_fd, _ = network.add_namespace("old")
    new_fd, _ = network.add_namespace("new")
    old = service.handle(_attach("ADD", "old", "eth0", "web"), old_fd)
    new = service.handle(_attach("ADD", "new", "eth0", "web"), new_fd)
    assert new["interfaces"][0]["name"] == attachment_veth_name("new", "eth0")
    assert allocator.lookup(network="aws-cni", container_id="new", ifname="eth0").host_veth == (
        attachment_veth_name("new", "eth0")
    )
    service.handle(_attach("CHECK", "old", "eth0", "web", prev=old), old_fd)
    service.handle(_attach("CHECK", "new", "eth0", "web", prev=new), new_fd)
    # the old sandbox goes first, its netns already gone: the new one is untouched
    network.delete_namespace(old_fd)
    service.handle(_attach("DEL", "old", "eth0", "web", prev=old), None)
    service.handle(_attach("CHECK", "new", "eth0", "web", prev=new), new_fd)
    service.handle(_attach("DEL", "new", "eth0", "web", prev=new), None)
    assert _host_veths(host) == set() and allocator.allocations() == ()


def test_a_stale_sandbox_deleted_after_its_successor_took_the_name_leaves_the_successor(world) -> None:
    network, _host, _allocator, service = world
    old_fd, _ = network.add_namespace("old")
    old = service.handle(_attach("ADD", "old", "eth0", "web"), old_fd)
    network.delete_namespace(old_fd)  # the old sandbox died; its DEL has not come yet
    new_fd, _ = network.add_namespace("new")
    new = service.handle(_attach("ADD", "new", "eth0", "web"), new_fd)
    assert new["interfaces"][0]["name"] == host_veth_name("ns", "web")  # free again: upstream's name
    service.handle(_attach("DEL", "old", "eth0", "web", prev=old), None)
    service.handle(_attach("CHECK", "new", "eth0", "web", prev=new), new_fd)
    gc = _request("GC", "", **{"cni.dev/valid-attachments": [{"containerID": "new", "ifname": "eth0"}]})
    service.handle(gc, None)
    service.handle(_attach("CHECK", "new", "eth0", "web", prev=new), new_fd)


def test_pods_without_a_name_get_veths_of_their_own(world) -> None:
    network, _host, _allocator, service = world
    fds = [network.add_namespace(f"p{i}")[0] for i in range(2)]
    results = [service.handle(_attach("ADD", f"c{i}", "eth0", ""), fd) for i, fd in enumerate(fds)]
    names = [r["interfaces"][0]["name"] for r in results]
    assert names == [attachment_veth_name(f"c{i}", "eth0") for i in range(2)]
    for i, fd in enumerate(fds):
        service.handle(_attach("CHECK", f"c{i}", "eth0", "", prev=results[i]), fd)


def test_a_leftover_veth_of_no_live_attachment_is_replaced(world) -> None:
    network, host, _allocator, service = world
    host.add_link(host_veth_name("ns", "web"), mac="02:00:00:00:00:09", mtu=9001, kind="veth")
    fd, _ = network.add_namespace("pod")
    result = service.handle(_attach("ADD", "c1", "eth0", "web"), fd)
    assert result["interfaces"][0]["name"] == host_veth_name("ns", "web")
    service.handle(_attach("CHECK", "c1", "eth0", "web", prev=result), fd)
