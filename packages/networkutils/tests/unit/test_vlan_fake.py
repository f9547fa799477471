"""Branch-ENI (VLAN) wiring against the stateful fakes: exact host state in both enforcing modes, teardown
from the few facts a CNI result carries, verification."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from vpccni.networkutils.model import Route, Rule, Scope
from vpccni.networkutils.names import (
    STRICT_BRANCH_VETH_PREFIX,
    host_veth_name,
    vlan_id_of_link,
    vlan_link_name,
)
from vpccni.networkutils.pod import PodInterface, PodWiring
from vpccni.networkutils.tables import route_table_for_vlan
from vpccni.networkutils.testing import FakeNamespace, FakeNetnsNetlink, FakeNetwork
from vpccni.networkutils.vlan import BranchPodInterface, BranchPodWiring, EnforcingMode

POD_IP = IPv4Address("10.0.16.40")
GW = IPv4Address("10.0.16.1")
BRANCH_MAC = "0a:bb:00:00:00:07"
TRUNK = "eth2"


@pytest.fixture
def world() -> tuple[FakeNamespace, int, FakeNamespace, BranchPodWiring]:
    network = FakeNetwork()
    _, host = network.add_namespace("host")
    pod_fd, pod = network.add_namespace("pod")
    host.add_link(TRUNK, mac="0a:aa:00:00:00:02", up=True)
    pods = PodWiring(host=host, namespaces=FakeNetnsNetlink(network))
    return host, pod_fd, pod, BranchPodWiring(host=host, pods=pods)


def branch(mode: EnforcingMode, vlan: int = 7) -> BranchPodInterface:
    prefix = STRICT_BRANCH_VETH_PREFIX if mode is EnforcingMode.STRICT else "eni"
    pod = PodInterface(
        host_veth=host_veth_name("db", "orders", prefix=prefix),
        ip=POD_IP,
        route_table=route_table_for_vlan(vlan),
    )
    return BranchPodInterface(
        pod=pod, vlan_id=vlan, branch_mac=BRANCH_MAC, gateway=GW, trunk_link=TRUNK, mode=mode
    )


def vlan_table(vlan: int = 7) -> list[Route]:
    return [
        Route(dst=IPv4Network("10.0.16.1/32"), ifname="vlan.eth.7", scope=Scope.LINK, table=107),
        Route(dst=IPv4Network("0.0.0.0/0"), ifname="vlan.eth.7", gateway=GW, table=107),
    ]


def pod_rules(host: FakeNamespace) -> list[Rule]:
    return [r for r in host.rules() if r.priority in (10, 512, 1536)]


def test_names_and_tables_are_upstreams() -> None:
    assert vlan_link_name(7) == "vlan.eth.7" and vlan_id_of_link("vlan.eth.7") == 7
    assert vlan_id_of_link("vlan.eth.07") is None and vlan_id_of_link("eth0") is None
    assert route_table_for_vlan(7) == 107
    with pytest.raises(ValueError, match="VLAN id 0"):
        route_table_for_vlan(0)
    with pytest.raises(ValueError, match="table 107"):
        BranchPodInterface(
            pod=PodInterface(host_veth="vlanx", ip=POD_IP), vlan_id=7, branch_mac=BRANCH_MAC,
            gateway=GW, trunk_link=TRUNK,
        )  # fmt: skip


def test_strict_mode_routes_everything_through_the_vlan(world) -> None:
    host, pod_fd, pod, wiring = world
    spec = branch(EnforcingMode.STRICT)
    wiring.wire(pod_fd, spec)

    vlan = host.link("vlan.eth.7")
    assert vlan is not None and vlan.up and vlan.mac == BRANCH_MAC and vlan.kind == "vlan"
    assert host.vlan_of("vlan.eth.7") == (TRUNK, 7)
    assert host.read_sysctl("net/ipv6/conf/vlan.eth.7/accept_ra") == "0"
    veth = spec.pod.host_veth
    assert veth.startswith("vlan")
    assert host.routes(107) == [
        *vlan_table(),
        Route(dst=IPv4Network("10.0.16.40/32"), ifname=veth, scope=Scope.LINK, table=107),
    ]
    assert host.routes(254) == []  # nothing in main: even same-node traffic leaves through the branch ENI
    assert pod_rules(host) == [
        Rule(priority=10, table=107, iif="vlan.eth.7"),
        Rule(priority=10, table=107, iif=veth),
    ]
    assert pod.addresses("eth0")[0].interface.ip == POD_IP
    assert wiring.verify(pod_fd, spec) == []


def test_standard_mode_routes_by_address(world) -> None:
    host, pod_fd, _, wiring = world
    spec = branch(EnforcingMode.STANDARD)
    wiring.wire(pod_fd, spec)
    veth = spec.pod.host_veth
    assert host.routes(107) == vlan_table()
    assert host.routes(254) == [Route(dst=IPv4Network("10.0.16.40/32"), ifname=veth, scope=Scope.LINK)]
    assert pod_rules(host) == [
        Rule(priority=512, table=254, dst=IPv4Network("10.0.16.40/32")),
        Rule(priority=1536, table=107, src=IPv4Network("10.0.16.40/32")),
    ]
    assert wiring.verify(pod_fd, spec) == []


@pytest.mark.parametrize("mode", list(EnforcingMode))
def test_teardown_from_vlan_address_and_veth_removes_both_modes(world, mode: EnforcingMode) -> None:
    host, pod_fd, _, wiring = world
    spec = branch(mode)
    wiring.wire(pod_fd, spec)
    # What a DEL knows from prevResult alone: the VLAN id, the address and the host veth.
    bare = PodInterface(host_veth=spec.pod.host_veth, ip=POD_IP)
    for _ in range(2):  # idempotent
        wiring.unwire(bare, 7)
        assert host.link("vlan.eth.7") is None and host.link(spec.pod.host_veth) is None
        assert host.routes(107) == [] and host.routes(254) == []
        assert pod_rules(host) == []
    assert host.link(TRUNK) is not None


def test_rewire_replaces_leftover_vlan_and_veth_rules(world) -> None:
    host, pod_fd, _, wiring = world
    spec = branch(EnforcingMode.STRICT)
    host.add_vlan(name="vlan.eth.7", parent=TRUNK, vlan_id=7, mac="0a:00:00:00:00:99")
    host.add_rule(Rule(priority=10, table=150, iif=spec.pod.host_veth))  # an older pod of that name
    wiring.wire(pod_fd, spec)
    assert host.link("vlan.eth.7").mac == BRANCH_MAC  # type: ignore[union-attr]
    assert Rule(priority=10, table=150, iif=spec.pod.host_veth) not in host.rules()


def test_a_missing_trunk_fails_cleanly_with_a_reason(world) -> None:
    host, pod_fd, pod, wiring = world
    spec = BranchPodInterface(**{**branch(EnforcingMode.STRICT).__dict__, "trunk_link": "eth9"})
    with pytest.raises(LookupError, match="trunk ENI's link eth9 is gone"):
        wiring.wire(pod_fd, spec)
    assert host.link(spec.pod.host_veth) is None and pod.link("eth0") is None
    assert pod_rules(host) == [] and host.routes(107) == []


def test_verify_names_each_drift(world) -> None:
    host, pod_fd, _, wiring = world
    spec = branch(EnforcingMode.STRICT)
    wiring.wire(pod_fd, spec)
    host.delete_rule(Rule(priority=10, table=107, iif="vlan.eth.7"))
    host.set_link("vlan.eth.7", up=False)
    problems = wiring.verify(pod_fd, spec)
    assert "VLAN link vlan.eth.7 is down" in problems
    assert "rule from all iif vlan.eth.7 lookup 107 prio 10 missing" in problems
    host.delete_link("vlan.eth.7")
    assert "VLAN link vlan.eth.7 missing" in wiring.verify(pod_fd, spec)


def test_a_vlan_link_goes_with_its_parent(world) -> None:
    host, pod_fd, _, wiring = world
    spec = branch(EnforcingMode.STRICT)
    wiring.wire(pod_fd, spec)
    host.delete_link(TRUNK)
    assert host.link("vlan.eth.7") is None
    assert [r.ifname for r in host.routes(107)] == [spec.pod.host_veth]  # the gateway routes went with it


def test_an_ipv6_branch_pod_gets_ipv6_rules_and_routes_that_teardown_removes(world) -> None:
    """The networking layer takes either family (upstream wires IPv6 branch pods with AF_INET6 iif rules)."""
    host, pod_fd, _, wiring = world
    ip, gw = IPv6Address("2001:db8:0:10::28"), IPv6Address("fe80::1")
    spec = BranchPodInterface(
        pod=PodInterface(host_veth="vlanv6pod", ip=ip, route_table=107),
        vlan_id=7, branch_mac=BRANCH_MAC, gateway=gw, trunk_link=TRUNK,
    )  # fmt: skip
    host.add_rule(Rule(priority=10, table=107, iif="vlan.eth.7"))  # an IPv4 rule of the table stays
    wiring.wire(pod_fd, spec)
    assert Route(dst=IPv6Network("::/0"), ifname="vlan.eth.7", gateway=gw, table=107) in host.routes(107)
    assert set(pod_rules(host)) == {
        Rule(priority=10, table=107, iif="vlan.eth.7"),
        Rule(priority=10, table=107, iif="vlan.eth.7", family=6),
        Rule(priority=10, table=107, iif="vlanv6pod", family=6),
    }
    assert host.read_sysctl("net/ipv6/conf/vlan.eth.7/accept_dad") == "0"
    assert wiring.verify(pod_fd, spec) == []
    wiring.unwire(PodInterface(host_veth="vlanv6pod", ip=ip), 7)
    assert pod_rules(host) == [Rule(priority=10, table=107, iif="vlan.eth.7")]
