from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

import pytest
from vpccni.networkutils.model import Address, Neighbour, Route, Rule, Scope
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.pod import PodInterface, PodWiring, PodWiringError
from vpccni.networkutils.testing import FakeNamespace, FakeNetnsNetlink, FakeNetwork

POD_IP = IPv4Address("10.0.1.5")
VETH = host_veth_name("default", "nginx")


@pytest.fixture
def world() -> tuple[FakeNetwork, FakeNamespace, int, FakeNamespace, PodWiring]:
    network = FakeNetwork()
    _, host = network.add_namespace("host")
    pod_fd, pod = network.add_namespace("pod")
    host.add_link("eth0", mac="0a:00:00:00:00:01", up=True)
    return network, host, pod_fd, pod, PodWiring(host=host, namespaces=FakeNetnsNetlink(network))


def test_wire_on_secondary_eni(world) -> None:
    _, host, pod_fd, pod, wiring = world
    spec = PodInterface(host_veth=VETH, ip=POD_IP, route_table=2, mtu=9001)
    wired = wiring.wire(pod_fd, spec)

    host_link = host.link(VETH)
    assert host_link is not None and host_link.up and host_link.mtu == 9001
    assert wired.host_mac == host_link.mac
    assert int(wired.host_mac[:2], 16) & 0x03 == 0x02
    assert host.read_sysctl(f"net/ipv6/conf/{VETH}/accept_ra") == "0"
    assert host.read_sysctl(f"net/ipv6/conf/{VETH}/accept_redirects") == "1"
    assert host.read_sysctl(f"net/ipv6/conf/{VETH}/forwarding") == "0"
    assert host.routes(254) == [Route(dst=IPv4Network("10.0.1.5/32"), ifname=VETH, scope=Scope.LINK)]
    assert [r for r in host.rules() if r.priority in (512, 1536)] == [
        Rule(priority=512, table=254, dst=IPv4Network("10.0.1.5/32")),
        Rule(priority=1536, table=2, src=IPv4Network("10.0.1.5/32")),
    ]

    eth0 = pod.link("eth0")
    assert eth0 is not None and eth0.up and wired.container_mac == eth0.mac
    assert pod.addresses("eth0") == [Address(ifname="eth0", interface=IPv4Interface("10.0.1.5/32"))]
    assert pod.routes(254) == [
        Route(dst=IPv4Network("169.254.1.1/32"), ifname="eth0", scope=Scope.LINK),
        Route(dst=IPv4Network("0.0.0.0/0"), ifname="eth0", gateway=IPv4Address("169.254.1.1")),
    ]
    assert pod.neighbours("eth0") == [
        Neighbour(ifname="eth0", ip=IPv4Address("169.254.1.1"), mac=wired.host_mac, permanent=True)
    ]
    assert wiring.verify(pod_fd, spec) == []


def test_wire_ipv6_pod(world) -> None:
    _, host, pod_fd, pod, wiring = world
    ip = IPv6Address("2001:db8:0:100:1::5")
    spec = PodInterface(host_veth=VETH, ip=ip)
    wired = wiring.wire(pod_fd, spec)
    assert host.read_sysctl(f"net/ipv6/conf/{VETH}/accept_dad") == "0"
    assert host.routes(254) == [Route(dst=IPv6Network(f"{ip}/128"), ifname=VETH)]
    assert [r for r in host.rules() if r.priority in (512, 1536)] == [
        Rule(priority=512, table=254, dst=IPv6Network(f"{ip}/128"))
    ]
    assert pod.addresses("eth0") == [Address(ifname="eth0", interface=IPv6Interface(f"{ip}/128"))]
    assert pod.read_sysctl("net/ipv6/conf/eth0/accept_dad") == "0"
    assert pod.routes(254) == [
        Route(dst=IPv6Network("fe80::1/128"), ifname="eth0"),
        Route(dst=IPv6Network("::/0"), ifname="eth0", gateway=IPv6Address("fe80::1")),
    ]
    assert pod.neighbours("eth0") == [Neighbour(ifname="eth0", ip=IPv6Address("fe80::1"), mac=wired.host_mac)]
    assert wiring.verify(pod_fd, spec) == []
    wiring.unwire(spec, pod_fd)
    assert host.routes(254) == [] and [r for r in host.rules() if r.priority == 512] == []


def test_primary_eni_pod_gets_no_from_rule(world) -> None:
    _, host, pod_fd, _, wiring = world
    wiring.wire(pod_fd, PodInterface(host_veth=VETH, ip=POD_IP))
    assert [r.priority for r in host.rules() if r.priority in (512, 1536)] == [512]


def test_second_interface_uses_own_gateway_table_and_rule(world) -> None:
    _, _, pod_fd, pod, wiring = world
    spec = PodInterface(
        host_veth=host_veth_name("default", "nginx", index=1), ip=POD_IP, ifname="mNicIf1", index=1
    )
    wiring.wire(pod_fd, spec)
    assert pod.routes(1)[1].gateway == IPv4Address("169.254.1.2")
    assert Rule(priority=1, table=1, src=IPv4Network("10.0.1.5/32")) in pod.rules()
    assert wiring.verify(pod_fd, spec) == []
    wiring.unwire(spec, pod_fd)
    assert all(r.priority != 1 for r in pod.rules())


def test_rewire_replaces_leftover_veth(world) -> None:
    _, host, pod_fd, _, wiring = world
    host.add_link(VETH, mac="02:11:11:11:11:11")
    wired = wiring.wire(pod_fd, PodInterface(host_veth=VETH, ip=POD_IP))
    assert wired.host_mac != "02:11:11:11:11:11"


def test_unwire_is_idempotent_and_works_without_netns(world) -> None:
    network, host, pod_fd, _, wiring = world
    spec = PodInterface(host_veth=VETH, ip=POD_IP, route_table=3)
    wiring.wire(pod_fd, spec)
    # A stale from-rule to another table (older layout) goes too.
    host.add_rule(Rule(priority=1536, table=7, src=IPv4Network("10.0.1.5/32")))
    network.delete_namespace(pod_fd)
    wiring.unwire(spec)
    wiring.unwire(spec)
    assert host.link(VETH) is None
    assert host.routes(254) == []
    assert [r for r in host.rules() if r.priority in (512, 1536)] == []


def test_verify_reports_precise_differences(world) -> None:
    _, host, pod_fd, pod, wiring = world
    spec = PodInterface(host_veth=VETH, ip=POD_IP, route_table=2)
    wiring.wire(pod_fd, spec)
    pod.delete_route(Route(dst=IPv4Network("169.254.1.1/32"), ifname="eth0", scope=Scope.LINK))
    host.delete_rule(Rule(priority=1536, table=2, src=IPv4Network("10.0.1.5/32")))
    assert wiring.verify(pod_fd, spec) == [
        "rule from 10.0.1.5 lookup 2 prio 1536 missing",
        "route 169.254.1.1/32 dev eth0 scope link missing in pod netns",
    ]


def test_verify_without_anything(world) -> None:
    _, _, pod_fd, _, wiring = world
    problems = wiring.verify(pod_fd, PodInterface(host_veth=VETH, ip=POD_IP))
    assert problems == [
        f"host veth {VETH} missing",
        "rule from all to 10.0.1.5 lookup main prio 512 missing",
        "interface eth0 missing in pod netns",
    ]


def test_failed_wiring_leaves_no_veth(world) -> None:
    _, host, pod_fd, pod, wiring = world
    pod.add_link("eth0", mac="02:00:00:00:00:09")
    with pytest.raises(PodWiringError, match="no interface named eth0"):
        wiring.wire(pod_fd, PodInterface(host_veth=VETH, ip=POD_IP))
    assert host.link(VETH) is None


def test_concurrent_wiring_gives_unique_macs(world) -> None:
    import threading

    network, host, _, _, wiring = world
    fds = [network.add_namespace(f"pod{i}")[0] for i in range(16)]
    threads = [
        threading.Thread(
            target=wiring.wire,
            args=(
                fd,
                PodInterface(host_veth=host_veth_name("ns", f"p{i}"), ip=IPv4Address(f"10.0.2.{i + 1}")),
            ),
        )
        for i, fd in enumerate(fds)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    veths = [link for link in host.links() if link.kind == "veth"]
    assert len(veths) == 16
    assert len({link.mac for link in veths}) == 16


def test_update_host_rules_migrates_per_cidr_rules(world) -> None:
    _, host, pod_fd, _, wiring = world
    spec = PodInterface(host_veth=VETH, ip=POD_IP, route_table=2)
    wiring.wire(pod_fd, spec)
    old = Rule(priority=1536, table=2, src=IPv4Network("10.0.1.5/32"), dst=IPv4Network("10.0.0.0/16"))
    host.delete_rule(Rule(priority=1536, table=2, src=IPv4Network("10.0.1.5/32")))
    host.add_rule(old)
    assert wiring.update_host_rules(spec) == [
        "rule from 10.0.1.5 to 10.0.0.0/16 lookup 2 prio 1536 deleted",
        "rule from 10.0.1.5 lookup 2 prio 1536 added",
    ]
    assert wiring.update_host_rules(spec) == []
    assert wiring.verify(pod_fd, spec) == []


def test_fake_delete_rules_matches_by_selector_in_any_table() -> None:
    _, host = FakeNetwork().add_namespace("host")
    ip, other = IPv4Network("10.0.1.5/32"), IPv4Network("10.0.1.6/32")
    for rule in (
        Rule(priority=1536, table=3, src=ip),
        Rule(priority=1536, table=4, src=ip, dst=IPv4Network("10.1.0.0/16")),
        Rule(priority=1536, table=3, src=other),
        Rule(priority=512, table=254, dst=ip),
    ):
        host.add_rule(rule)
    assert host.delete_rules(priority=1536, src=ip) == 2
    assert host.delete_rules(priority=1536, src=ip) == 0
    assert [r for r in host.rules() if r.priority in (512, 1536)] == [
        Rule(priority=512, table=254, dst=ip),
        Rule(priority=1536, table=3, src=other),
    ]


def test_update_all_host_rules_lists_the_rules_once_for_every_pod(world) -> None:
    _, host, _, _, wiring = world
    specs = [
        PodInterface(host_veth=f"eni{i}", ip=IPv4Address("10.0.1.10") + i, route_table=2) for i in range(5)
    ]
    for spec in specs:
        for rule in _host_rules_of(spec):
            host.add_rule(rule)
    # Pod 0's ENI was renumbered to table 3; pod 1 still has an old per-CIDR rule; pod 4 lost its rules.
    renumbered = PodInterface(host_veth="eni0", ip=specs[0].ip, route_table=3)
    specs[0] = renumbered
    host.add_rule(
        Rule(priority=1536, table=2, src=IPv4Network("10.0.1.11/32"), dst=IPv4Network("10.0.0.0/16"))
    )
    host.delete_rules(priority=512, dst=IPv4Network("10.0.1.14/32"))
    host.delete_rules(priority=1536, src=IPv4Network("10.0.1.14/32"))
    listings = 0
    real_rules = host.rules

    def counting_rules() -> list[Rule]:
        nonlocal listings
        listings += 1
        return real_rules()

    host.rules = counting_rules  # type: ignore[method-assign]
    changes = wiring.update_all_host_rules(specs)
    assert listings == 1
    assert sorted(changes) == sorted(
        [
            "rule from 10.0.1.10 lookup 2 prio 1536 deleted",
            "rule from 10.0.1.11 to 10.0.0.0/16 lookup 2 prio 1536 deleted",
            "rule from 10.0.1.10 lookup 3 prio 1536 added",
            "rule from all to 10.0.1.14 lookup main prio 512 added",
            "rule from 10.0.1.14 lookup 2 prio 1536 added",
        ]
    )
    assert wiring.update_all_host_rules(specs) == []
    pod_rules = {r for r in real_rules() if r.priority in (512, 1536)}
    assert pod_rules == {r for spec in specs for r in _host_rules_of(spec)}


def _host_rules_of(spec: PodInterface) -> list[Rule]:
    ip = IPv4Network(f"{spec.ip}/32")
    return [Rule(priority=512, table=254, dst=ip), Rule(priority=1536, table=spec.route_table, src=ip)]
