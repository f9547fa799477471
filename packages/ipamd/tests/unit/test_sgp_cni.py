"""Branch-ENI pods through the CNI service: the real BranchCni, VLAN wiring and shared checkpoint over the
stateful fakes (netlink, pod list, checkpoint), beside the datastore's ordinary pods."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.version import VERSION
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.checkpoint.fileformat import decode
from vpccni.ipamd.checkpoint.shared import SharedCheckpoint
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.cni.netpolicy import PolicyAdmission
from vpccni.ipamd.cni.result import dummy_interface_name
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, FakePodNetwork, secondary_ips
from vpccni.ipamd.sgp.attachments import BranchAttachments
from vpccni.ipamd.sgp.cni import BranchCni
from vpccni.ipamd.sgp.lookup import BranchPodLookup
from vpccni.ipamd.sgp.restore import restore_branch_pods
from vpccni.k8sapi import PodCache, PodInfo
from vpccni.networkutils.model import Rule
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.pod import PodWiring
from vpccni.networkutils.testing import FakeNamespace, FakeNetnsNetlink, FakeNetwork
from vpccni.networkutils.vlan import BranchPodWiring

TRUNK = "eth2"


def annotation(*, vlan: int = 7, ip: str = "10.0.16.40", mac: str = "0a:bb:00:00:00:07") -> str:
    """As the controller writes it for a branch ENI of a dual-stack subnet (an IPv6 node takes its IPv6)."""
    return json.dumps(
        [{"eniId": f"eni-0b{vlan:015x}", "ifAddress": mac, "privateIp": ip, "vlanId": vlan,
          "subnetCidr": "10.0.16.0/20", "ipv6Addr": f"2600:1f14:a:b100::{vlan:x}",
          "subnetV6Cidr": "2600:1f14:a:b100::/64"}]
    )  # fmt: skip


@dataclass
class Node:
    net: FakeNetwork
    host: FakeNamespace
    pods: PodCache
    file: MemoryCheckpointer
    allocator: FakeAllocator
    service: CniService
    branches: BranchCni
    attachments: BranchAttachments
    wiring: BranchPodWiring
    trunk: list[str | None]

    def pod_netns(self, name: str) -> int:
        fd, _ = self.net.add_namespace(name)
        return fd

    def put(self, name: str, *, eni: bool = True, **kwargs: Any) -> None:
        annotations = (
            {"vpc.amazonaws.com/pod-eni": annotation(**kwargs)} if eni and kwargs is not None else {}
        )
        self.pods.upsert(PodInfo(namespace="db", name=name, annotations=annotations, requests_pod_eni=eni))


def sleep(clock: list[float], seconds: float, then: Callable[[], None]) -> None:
    clock[0] += seconds
    then()


def build(
    file: MemoryCheckpointer | None = None,
    *,
    same_host_as: Node | None = None,
    on_sleep: Callable[[], None] = lambda: None,
    policy: PolicyAdmission | None = None,
    ipv6: bool = False,
) -> Node:
    """A node; `same_host_as` another one: ipamd restarted on that host (same links, its own state)."""
    if same_host_as is not None:
        net, host = same_host_as.net, same_host_as.host
    else:
        net = FakeNetwork()
        _, host = net.add_namespace("host")
        host.add_link(TRUNK, mac="0a:aa:00:00:00:02", up=True)
    pods = PodCache()
    pods.replace_all([], resource_version="1")
    file = file or MemoryCheckpointer()
    shared = SharedCheckpoint(file)
    attachments = BranchAttachments(checkpointer=shared.branches)
    trunk: list[str | None] = [TRUNK]
    clock = [0.0]  # BranchCni's: advanced by its sleeps only
    wiring = BranchPodWiring(host=host, pods=PodWiring(host=host, namespaces=FakeNetnsNetlink(net)))
    branches = BranchCni(
        lookup=BranchPodLookup(pods=lambda: pods, ipv6=ipv6),
        attachments=attachments,
        wiring=wiring,
        trunk_link=lambda: trunk[0],
        max_wait_s=0.05,
        monotonic=lambda: clock[0],
        sleep=lambda s: sleep(clock, s, on_sleep),
    )
    allocator = FakeAllocator(secondary_ips("10.0.1.10", 3))
    service = CniService(
        allocator=allocator, network=FakePodNetwork(), branches=branches,
        classify_netns=lambda fd: NetnsKind.POD, policy=policy,
    )  # fmt: skip
    return Node(net, host, pods, file, allocator, service, branches, attachments, wiring, trunk)


def request(command: str, *, container: str = "c1", pod: str = "orders", **conf: Any) -> Request:
    return Request(
        version=VERSION, command=command, container_id=container, ifname="eth0",
        netns_path=f"/var/run/netns/{container}", has_netns_fd=command in ("ADD", "CHECK"),
        k8s_args=K8sArgs(pod_name=pod, pod_namespace="db"),
        netconf={"cniVersion": "0.4.0", "name": "aws-cni", **conf}, cni_version="0.4.0",
    )  # fmt: skip


def error(fn: Any, *args: Any) -> CNIError:
    with pytest.raises(CNIError) as info:
        fn(*args)
    return info.value


def host_rules(node: Node) -> list[Rule]:
    return [r for r in node.host.rules() if r.priority in (10, 512, 1536)]


def test_a_branch_pod_is_wired_through_its_vlan_and_answered_as_upstream() -> None:
    node = build()
    node.put("orders")
    fd = node.pod_netns("orders")
    result = node.service.handle(request("ADD"), fd)
    veth = host_veth_name("db", "orders", prefix="vlan")
    assert result["interfaces"][1:] == [
        {"name": "eth0", "sandbox": "/var/run/netns/c1", "mac": "-1"},
        {"name": dummy_interface_name("db", "orders"), "mac": "7"},  # the VLAN id, no device number
    ]
    assert result["interfaces"][0]["name"] == veth
    assert result["ips"] == [
        {"version": "4", "address": "10.0.16.40/32", "interface": 1, "gateway": "10.0.16.1"}
    ]
    assert node.host.vlan_of("vlan.eth.7") == (TRUNK, 7)
    assert host_rules(node) == [
        Rule(priority=10, table=107, iif="vlan.eth.7"),
        Rule(priority=10, table=107, iif=veth),
    ]
    assert node.allocator.allocations() == ()  # the datastore never sees a branch ENI's address
    [entry] = decode(node.file.data or b"")
    assert entry.branch is not None and entry.branch.vlan_id == 7 and str(entry.ip) == "10.0.16.40"
    assert b'"vpccniBranchEni":{"eniId":"eni-0b000000000000007","ifAddress":"0a:bb:00:00:00:07"' in (
        node.file.data or b""
    )
    assert node.service.handle(request("CHECK", prevResult=result), fd) is None


def test_standard_mode_follows_the_conflist() -> None:
    node = build()
    node.put("orders")
    result = node.service.handle(request("ADD", podSGEnforcingMode="standard"), node.pod_netns("orders"))
    assert result["interfaces"][0]["name"] == host_veth_name("db", "orders")
    assert [r.priority for r in host_rules(node)] == [512, 1536]


def test_ordinary_pods_still_come_from_the_datastore() -> None:
    node = build()
    node.put("web", eni=False)
    result = node.service.handle(request("ADD", pod="web"), node.pod_netns("web"))
    assert result["ips"][0]["address"] == "10.0.1.10/32" and len(node.allocator.allocations()) == 1
    assert node.attachments.all() == ()


def test_no_trunk_or_no_annotation_yet_is_try_again_later_and_wires_nothing() -> None:
    node = build()
    node.put("orders")
    node.trunk[0] = None
    err = error(node.service.handle, request("ADD"), node.pod_netns("orders"))
    assert err.code == ErrorCode.TRY_AGAIN_LATER and "no trunk ENI is attached" in err.msg
    node.trunk[0] = TRUNK
    node.pods.upsert(PodInfo(namespace="db", name="late", requests_pod_eni=True))
    err = error(node.service.handle, request("ADD", container="c2", pod="late"), node.pod_netns("late"))
    assert err.code == ErrorCode.TRY_AGAIN_LATER and "no vpc.amazonaws.com/pod-eni annotation" in err.msg
    assert node.host.link("vlan.eth.7") is None and host_rules(node) == [] and node.file.data is None


def test_an_add_waits_within_its_budget_for_the_trunk_ipamd_is_setting_up() -> None:
    nodes: list[Node] = []
    node = build(on_sleep=lambda: nodes[0].trunk.__setitem__(0, TRUNK))
    nodes.append(node)
    node.trunk[0] = None
    node.put("orders")
    result = node.service.handle(request("ADD"), node.pod_netns("orders"))
    assert result["ips"][0]["address"] == "10.0.16.40/32" and node.host.link("vlan.eth.7") is not None


def test_a_second_add_of_the_attachment_is_refused() -> None:
    node = build()
    node.put("orders")
    fd = node.pod_netns("orders")
    node.service.handle(request("ADD"), fd)
    err = error(node.service.handle, request("ADD"), fd)
    assert err.code == ErrorCode.INTERNAL and "already has interface eth0 with 10.0.16.40" in err.msg


def test_del_tears_down_and_forgets() -> None:
    node = build()
    node.put("orders")
    fd = node.pod_netns("orders")
    result = node.service.handle(request("ADD"), fd)
    node.service.handle(request("DEL", prevResult=result), fd)
    assert node.host.link("vlan.eth.7") is None and host_rules(node) == [] and node.host.routes(107) == []
    assert node.attachments.all() == () and decode(node.file.data or b"") == ()
    node.service.handle(request("DEL", prevResult=result), None)  # repeated: fine


def test_del_works_from_the_prev_result_alone() -> None:
    """ipamd restarted without its record (or an upstream plugin wired the pod): the result suffices."""
    first = build()
    first.put("orders")
    fd = first.pod_netns("orders")
    result = first.service.handle(request("ADD"), fd)
    second = build(same_host_as=first)  # no record, no pod list entry
    second.service.handle(request("DEL", prevResult=result), None)
    assert first.host.link("vlan.eth.7") is None and host_rules(first) == []
    assert first.host.link(host_veth_name("db", "orders", prefix="vlan")) is None


def test_a_vlan_the_controller_reused_for_a_live_pod_is_left_alone() -> None:
    node = build()
    node.put("orders")
    old = node.service.handle(request("ADD"), node.pod_netns("orders"))
    node.attachments.remove(node.attachments.all()[0].key)  # ipamd lost the old pod's record...
    node.put("payments", ip="10.0.16.41")  # ...and the controller gave VLAN 7 to a newer pod
    node.service.handle(request("ADD", container="c2", pod="payments"), node.pod_netns("payments"))
    node.service.handle(request("DEL", prevResult=old), None)  # the old pod's DEL comes late
    assert node.host.vlan_of("vlan.eth.7") == (TRUNK, 7)
    assert Rule(priority=10, table=107, iif="vlan.eth.7") in node.host.rules()


def test_check_names_the_drift() -> None:
    node = build()
    node.put("orders")
    fd = node.pod_netns("orders")
    node.service.handle(request("ADD"), fd)
    node.host.delete_rule(Rule(priority=10, table=107, iif="vlan.eth.7"))
    err = error(node.service.handle, request("CHECK"), fd)
    assert "branch ENI" in err.msg and "iif vlan.eth.7 lookup 107 prio 10 missing" in err.msg


def test_gc_collects_branch_pods_not_in_the_valid_list() -> None:
    node = build()
    for i, name in enumerate(("a", "b")):
        node.put(name, vlan=3 + i, ip=f"10.0.16.{50 + i}")
        node.service.handle(request("ADD", container=f"c{i}", pod=name), node.pod_netns(name))
    valid = [{"containerID": "c1", "ifname": "eth0"}]
    node.service.handle(request("GC", **{"cni.dev/valid-attachments": valid}), None)
    assert [a.key.container_id for a in node.attachments.all()] == ["c1"]
    assert node.host.link("vlan.eth.3") is None and node.host.link("vlan.eth.4") is not None


def test_a_failed_checkpoint_write_unwires_the_pod() -> None:
    node = build()
    node.put("orders")
    node.file.fail_writes = True
    err = error(node.service.handle, request("ADD"), node.pod_netns("orders"))
    assert "could not record branch-ENI pods" in err.msg
    assert node.host.link("vlan.eth.7") is None and host_rules(node) == [] and node.attachments.all() == ()


def test_the_datastore_and_branch_pods_share_the_file_without_losing_each_other() -> None:
    file = MemoryCheckpointer()
    node = build(file)
    node.put("orders")
    node.service.handle(request("ADD"), node.pod_netns("orders"))
    shared = SharedCheckpoint(file)  # a restart: the datastore writes first, then the branch pods
    assert shared.datastore.read() == ()
    shared.datastore.write([])
    assert len(decode(file.data or b"")) == 1
    assert [e.ip.exploded for e in shared.branches.read() or ()] == ["10.0.16.40"]


def test_restart_keeps_live_branch_pods_and_cleans_up_the_rest() -> None:
    node = build()
    fds = {}
    for i, name in enumerate(("live", "gone")):
        node.put(name, vlan=3 + i, ip=f"10.0.16.{50 + i}")
        fds[name] = node.pod_netns(name)
        node.service.handle(request("ADD", container=f"c{i}", pod=name), fds[name])
    node.net.delete_namespace(fds["gone"])  # the pod went while ipamd was down: its veth went with it
    node.host.add_vlan(name="vlan.eth.9", parent=TRUNK, vlan_id=9, mac="0a:00:00:00:00:09")  # cut-short ADD
    restarted = build(node.file, same_host_as=node)
    report = restore_branch_pods(
        attachments=restarted.attachments,
        netlink=node.host,
        wiring=restarted.wiring,
    )
    assert [a.metadata.name for a in report.restored] == ["live"]
    assert [a.metadata.name for a in report.gone] == ["gone"] and report.orphan_vlans == (9,)
    assert node.host.link("vlan.eth.3") is not None
    assert node.host.link("vlan.eth.4") is None and node.host.link("vlan.eth.9") is None
    assert all(r.table != 104 for r in node.host.rules())
    assert [e.metadata.name for e in decode(node.file.data or b"")] == ["live"]


class PolicyAgent:
    """The network policy agent's EnforceNpToPod, answering `confirm`."""

    def __init__(self, *, confirm: bool) -> None:
        self.confirm = confirm
        self.asked: list[tuple[str, str, str]] = []

    def enforce(self, *, namespace: str, name: str, mode: str, timeout_s: float, wait: bool) -> bool:
        self.asked.append((namespace, name, mode))
        return self.confirm


def test_a_branch_pod_is_admitted_by_the_network_policy_agent_like_any_pod() -> None:
    agent = PolicyAgent(confirm=True)
    node = build(policy=PolicyAdmission(mode="strict", agent=agent, where="unix:npa.sock"))
    node.put("orders")
    result = node.service.handle(request("ADD"), node.pod_netns("orders"))
    assert result["ips"][0]["address"] == "10.0.16.40/32"
    assert agent.asked == [("db", "orders", "strict")]


def test_a_branch_pod_strict_network_policy_refuses_is_rolled_back() -> None:
    agent = PolicyAgent(confirm=False)
    node = build(policy=PolicyAdmission(mode="strict", agent=agent, where="unix:npa.sock", timeout_s=0.1))
    node.put("orders")
    err = error(node.service.handle, request("ADD"), node.pod_netns("orders"))
    assert err.code == ErrorCode.TRY_AGAIN_LATER and "db/orders" in err.msg
    assert node.host.link("vlan.eth.7") is None and host_rules(node) == []
    assert node.attachments.all() == ()
    assert node.host.link(host_veth_name("db", "orders", prefix="vlan")) is None


def test_an_ipv6_node_wires_the_branch_enis_ipv6_address_admits_records_and_restores_it() -> None:
    agent = PolicyAgent(confirm=True)
    node = build(ipv6=True, policy=PolicyAdmission(mode="strict", agent=agent, where="unix:npa.sock"))
    node.put("orders")
    fd = node.pod_netns("orders")
    result = node.service.handle(request("ADD"), fd)
    veth = host_veth_name("db", "orders", prefix="vlan")
    assert result["ips"] == [
        {"version": "6", "address": "2600:1f14:a:b100::7/128", "interface": 1, "gateway": "fe80:ec2::1"}
    ]
    assert host_rules(node) == [
        Rule(priority=10, table=107, iif="vlan.eth.7", family=6),
        Rule(priority=10, table=107, iif=veth, family=6),
    ]
    assert agent.asked == [("db", "orders", "strict")]  # network policy admits it as any branch pod
    [entry] = decode(node.file.data or b"")
    assert str(entry.ip) == "2600:1f14:a:b100::7" and entry.branch is not None
    assert str(entry.branch.subnet) == "2600:1f14:a:b100::/64"
    # An ADD cut short by the crash: its VLAN link and IPv6 rule, and no record.
    node.host.add_vlan(name="vlan.eth.9", parent=TRUNK, vlan_id=9, mac="0a:00:00:00:00:09")
    node.host.add_rule(Rule(priority=10, table=109, iif="vlan.eth.9", family=6))
    restarted = build(node.file, same_host_as=node, ipv6=True)
    report = restore_branch_pods(
        attachments=restarted.attachments, netlink=node.host, wiring=restarted.wiring
    )
    assert [str(a.branch.ip) for a in report.restored] == ["2600:1f14:a:b100::7"]
    assert report.orphan_vlans == (9,) and all(r.table != 109 for r in node.host.rules())
    assert restarted.service.handle(request("CHECK", prevResult=result), fd) is None
    assert restarted.service.handle(request("DEL", prevResult=result), None) is None
    assert node.host.link("vlan.eth.7") is None and host_rules(node) == []
    assert restarted.attachments.all() == ()


def test_an_ipv6_node_refuses_a_branch_eni_without_ipv6_naming_the_subnet() -> None:
    node = build(ipv6=True)
    node.pods.upsert(
        PodInfo(
            namespace="db",
            name="orders",
            annotations={
                "vpc.amazonaws.com/pod-eni": json.dumps([{**json.loads(annotation())[0], "ipv6Addr": ""}])
            },
            requests_pod_eni=True,
        )
    )
    err = error(node.service.handle, request("ADD"), node.pod_netns("orders"))
    assert err.code == ErrorCode.INTERNAL and "no ipv6Addr" in err.msg and "dual-stack subnet" in err.msg
    assert node.host.link("vlan.eth.7") is None and node.attachments.all() == ()
