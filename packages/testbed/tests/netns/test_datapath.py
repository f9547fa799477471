"""The VPC datapath against a small in-test EC2 state: links, routes, source/destination check, traffic."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from vpccni.testbed.datapath import Datapath, DatapathConfig, NodeNetwork, VpcLayout
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo
from vpccni.testbed.ec2.security import SecurityState
from vpccni.testbed.events import AddressesChanged, BranchAssociated, EniAttached, EniDetached

IP = ipaddress.IPv4Address
SUBNET = ipaddress.IPv4Network("10.0.0.0/24")


@dataclass
class _Eni:
    instance_id: str
    mac: str
    device_index: int
    primary: ipaddress.IPv4Address
    network_card: int = 0
    secondaries: list[ipaddress.IPv4Address] = field(default_factory=list)
    prefixes: list[ipaddress.IPv4Network] = field(default_factory=list)
    ipv6: list[ipaddress.IPv6Address] = field(default_factory=list)
    ipv6_prefixes: list[ipaddress.IPv6Network] = field(default_factory=list)


class StatefulEc2:
    """Just enough EC2 state for the datapath: ENIs, their addresses, and the events EC2 changes publish."""

    def __init__(self) -> None:
        self.enis: dict[str, _Eni] = {}
        self._subscribers: list[Callable[[object], None]] = []

    def subscribe(self, callback: Callable[[object], None]) -> None:
        self._subscribers.append(callback)

    def eni_addresses(self, eni_id: str) -> tuple[IP, list[IP], list[ipaddress.IPv4Network], str]:
        eni = self.enis[eni_id]
        return eni.primary, list(eni.secondaries), list(eni.prefixes), "subnet-1"

    def subnet_cidr(self, subnet_id: str) -> ipaddress.IPv4Network:
        assert subnet_id == "subnet-1"
        return SUBNET

    def eni_ipv6(self, eni_id: str) -> tuple[list[ipaddress.IPv6Address], list[ipaddress.IPv6Network]]:
        eni = self.enis[eni_id]
        return list(eni.ipv6), list(eni.ipv6_prefixes)

    def instance_enis(self, instance_id: str) -> list[EniAttached]:
        return [self._attached(eni_id) for eni_id, e in self.enis.items() if e.instance_id == instance_id]

    def trunk_associations(self, trunk_eni_id: str) -> list[BranchAssociated]:
        return []  # no trunks here (tests/netns/test_sgp_datapath.py has them, with the real testbed EC2)

    def security_state(self) -> SecurityState:
        return SecurityState()  # no ENI listed: nothing filtered

    def attach(
        self,
        eni_id: str,
        *,
        instance_id: str,
        device_index: int,
        primary: str,
        network_card: int = 0,
        ipv6: str = "",
    ) -> None:
        mac = f"02:00:00:00:{len(self.enis):02x}:{device_index:02x}"
        self.enis[eni_id] = _Eni(
            instance_id=instance_id, mac=mac, device_index=device_index, primary=IP(primary),
            network_card=network_card, ipv6=[ipaddress.IPv6Address(ipv6)] if ipv6 else [],
        )  # fmt: skip
        self._publish(self._attached(eni_id))

    def detach(self, eni_id: str) -> None:
        eni = self.enis.pop(eni_id)
        self._publish(EniDetached(instance_id=eni.instance_id, eni_id=eni_id, mac=eni.mac))

    def assign(self, eni_id: str, *ips: str) -> None:
        self.enis[eni_id].secondaries.extend(IP(ip) for ip in ips)
        self._publish(AddressesChanged(eni_id=eni_id))

    def assign_ipv6_prefix(self, eni_id: str, prefix: str) -> None:
        self.enis[eni_id].ipv6_prefixes.append(ipaddress.IPv6Network(prefix))
        self._publish(AddressesChanged(eni_id=eni_id))

    def unassign(self, eni_id: str, *ips: str) -> None:
        for ip in ips:
            self.enis[eni_id].secondaries.remove(IP(ip))
        self._publish(AddressesChanged(eni_id=eni_id))

    def _attached(self, eni_id: str) -> EniAttached:
        e = self.enis[eni_id]
        return EniAttached(
            instance_id=e.instance_id, eni_id=eni_id, mac=e.mac, device_index=e.device_index,
            network_card=e.network_card,
        )  # fmt: skip

    def _publish(self, event: object) -> None:
        for callback in self._subscribers:
            callback(event)


@pytest.fixture
def ec2() -> StatefulEc2:
    return StatefulEc2()


@pytest.fixture
def datapath(ec2: StatefulEc2) -> Iterator[Datapath]:
    dp = Datapath(cloud=ec2, config=DatapathConfig())
    try:
        dp.start()
        yield dp
    finally:
        dp.stop()


@pytest.fixture
def node(datapath: Datapath, ec2: StatefulEc2) -> NodeNetwork:
    ec2.attach("eni-aaaa0001", instance_id="i-1", device_index=0, primary="10.0.0.10")
    return datapath.add_node(instance_id="i-1", name="node1")


def _ip(netns: str, *args: str) -> str:
    return ns.exec_in_netns(netns, ["ip", *args])


def test_primary_eni_is_eth0_configured_like_the_ami(node: NodeNetwork, ec2: StatefulEc2) -> None:
    links = node.links()
    assert links["eth0"] == ec2.enis["eni-aaaa0001"].mac
    assert "10.0.0.10/24" in _ip(node.netns, "-4", "addr", "show", "eth0")
    assert _ip(node.netns, "route", "show", "default").split()[:3] == ["default", "via", "10.0.0.1"]
    assert ping(node.netns, IP("10.0.0.1"))


def test_node_reaches_vpc_host_and_internet_from_its_primary_ip(
    datapath: Datapath, node: NodeNetwork
) -> None:
    assert ping(node.netns, datapath.vpc_host_ip)
    assert ping(node.netns, datapath.internet_ip)
    with EchoServer(netns=datapath.router.internet_netns, ip=datapath.internet_ip) as server:
        assert tcp_echo(node.netns, datapath.internet_ip, server.port) == "10.0.0.10"


def test_attach_makes_a_down_unaddressed_link_and_detach_removes_it(
    datapath: Datapath, node: NodeNetwork, ec2: StatefulEc2
) -> None:
    ec2.attach("eni-aaaa0002", instance_id="i-1", device_index=1, primary="10.0.0.20")
    assert node.links()["eth1"] == ec2.enis["eni-aaaa0002"].mac
    assert "state DOWN" in _ip(node.netns, "link", "show", "eth1")
    assert "inet " not in _ip(node.netns, "addr", "show", "eth1")

    ec2.detach("eni-aaaa0002")
    assert "eth1" not in node.links()
    assert "10.0.0.20" not in _ip(datapath.router.vpc_netns, "route")


def test_vpc_routes_follow_assigned_addresses(
    datapath: Datapath, node: NodeNetwork, ec2: StatefulEc2
) -> None:
    vpc = datapath.router.vpc_netns
    ec2.assign("eni-aaaa0001", "10.0.0.50", "10.0.0.51")
    routes = _ip(vpc, "route")
    assert "10.0.0.50 via 10.0.0.10 dev" in routes and "10.0.0.51 via 10.0.0.10 dev" in routes

    ec2.unassign("eni-aaaa0001", "10.0.0.50")
    routes = _ip(vpc, "route")
    assert "10.0.0.50 " not in routes and "10.0.0.51 via 10.0.0.10" in routes


def test_source_check_drops_unassigned_sources_and_passes_assigned_ones(
    datapath: Datapath, node: NodeNetwork, ec2: StatefulEc2
) -> None:
    # A second address on the node, sent out of eth0 (via the default route) before EC2 knows about it.
    _ip(node.netns, "addr", "add", "10.0.0.77/32", "dev", "lo")
    with EchoServer(netns=datapath.router.vpc_host_netns, ip=datapath.vpc_host_ip) as server:
        assert (
            tcp_echo(node.netns, datapath.vpc_host_ip, server.port, source=IP("10.0.0.77"), timeout=1) is None
        )
        assert datapath.router.dropped_by_srccheck("eni-aaaa0001") > 0

        ec2.assign("eni-aaaa0001", "10.0.0.77")
        assert tcp_echo(node.netns, datapath.vpc_host_ip, server.port, source=IP("10.0.0.77")) == "10.0.0.77"


def test_an_eni_on_another_network_card_is_wired_to_the_vpc_router(
    datapath: Datapath, node: NodeNetwork, ec2: StatefulEc2
) -> None:
    """Card 1's device 0 is the node's eth100; the VPC delivers its addresses through it and accepts them
    from it only (the source check is per ENI, whichever card holds it)."""
    ec2.attach("eni-cccc0001", instance_id="i-1", device_index=0, primary="10.0.0.30", network_card=1)
    assert node.links()["eth100"] == ec2.enis["eni-cccc0001"].mac
    ec2.assign("eni-cccc0001", "10.0.0.31")
    assert "10.0.0.31 via 10.0.0.30 dev" in _ip(datapath.router.vpc_netns, "route")
    # The node configures the card's ENI as ipamd would: its address, and a table for what it sends.
    _ip(node.netns, "link", "set", "eth100", "up")
    _ip(node.netns, "addr", "add", "10.0.0.30/24", "dev", "eth100", "noprefixroute")
    _ip(node.netns, "addr", "add", "10.0.0.31/32", "dev", "lo")
    _ip(node.netns, "route", "add", "default", "via", "10.0.0.1", "dev", "eth100", "onlink", "table", "10100")
    _ip(node.netns, "rule", "add", "from", "10.0.0.31", "lookup", "10100", "priority", "1536")
    with EchoServer(netns=datapath.router.vpc_host_netns, ip=datapath.vpc_host_ip) as server:
        assert tcp_echo(node.netns, datapath.vpc_host_ip, server.port, source=IP("10.0.0.31")) == "10.0.0.31"
        # The same source leaving through card 0's ENI is dropped there.
        _ip(node.netns, "rule", "del", "from", "10.0.0.31", "lookup", "10100", "priority", "1536")
        assert (
            tcp_echo(node.netns, datapath.vpc_host_ip, server.port, source=IP("10.0.0.31"), timeout=1) is None
        )
        assert datapath.router.dropped_by_srccheck("eni-aaaa0001") > 0


def test_only_addresses_with_a_public_ip_reach_the_internet(
    datapath: Datapath, node: NodeNetwork, ec2: StatefulEc2
) -> None:
    _ip(node.netns, "addr", "add", "10.0.0.78/32", "dev", "lo")
    ec2.assign("eni-aaaa0001", "10.0.0.78")
    with EchoServer(netns=datapath.router.internet_netns, ip=datapath.internet_ip) as server:
        assert (
            tcp_echo(node.netns, datapath.internet_ip, server.port, source=IP("10.0.0.78"), timeout=1) is None
        )
        assert tcp_echo(node.netns, datapath.internet_ip, server.port) == "10.0.0.10"


def test_a_nat_gateway_lets_every_vpc_address_reach_the_internet(ec2: StatefulEc2) -> None:
    dp = Datapath(cloud=ec2, config=DatapathConfig(layout=VpcLayout(nat_gateway=True)))
    try:
        dp.start()
        ec2.attach("eni-cccc0001", instance_id="i-3", device_index=0, primary="10.0.0.12")
        node = dp.add_node(instance_id="i-3", name="n3")
        _ip(node.netns, "addr", "add", "10.0.0.79/32", "dev", "lo")
        ec2.assign("eni-cccc0001", "10.0.0.79")
        with EchoServer(netns=dp.router.internet_netns, ip=dp.internet_ip) as server:
            # Translated by the NAT gateway to the VPC router's internet-side address.
            seen = tcp_echo(node.netns, dp.internet_ip, server.port, source=IP("10.0.0.79"))
            assert seen == str(next(dp.config.layout.internet_host.network.hosts()))
            assert tcp_echo(node.netns, dp.internet_ip, server.port) == "10.0.0.12"
    finally:
        dp.stop()


def test_stop_removes_every_namespace(ec2: StatefulEc2) -> None:
    dp = Datapath(cloud=ec2, config=DatapathConfig())
    root_links_before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count(
        "\n"
    )
    dp.start()
    try:
        ec2.attach("eni-bbbb0001", instance_id="i-2", device_index=0, primary="10.0.0.11")
        dp.add_node(instance_id="i-2", name="n2")
    finally:
        dp.stop()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"vtb-{dp.config.run_id}-" not in listed
    root_links_after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n")
    assert root_links_after == root_links_before
    # Events after stop are ignored, not applied to deleted namespaces.
    ec2.assign("eni-bbbb0001", "10.0.0.90")


VPC6 = ipaddress.IPv6Network("2001:db8:0:100::/56")


@pytest.fixture
def datapath6(ec2: StatefulEc2) -> Iterator[Datapath]:
    dp = Datapath(cloud=ec2, config=DatapathConfig(layout=VpcLayout(vpc_ipv6_cidr=VPC6)))
    try:
        dp.start()
        yield dp
    finally:
        dp.stop()


def test_dual_stack_eth0_has_its_ipv6_and_reaches_the_ipv6_hosts(
    datapath6: Datapath, ec2: StatefulEc2
) -> None:
    ec2.attach(
        "eni-dddd0001", instance_id="i-4", device_index=0, primary="10.0.0.13", ipv6="2001:db8:0:100::13"
    )
    node = datapath6.add_node(instance_id="i-4", name="n4")
    assert "2001:db8:0:100::13/128" in _ip(node.netns, "-6", "addr", "show", "eth0")
    assert _ip(node.netns, "-6", "route", "show", "default").split()[:3] == ["default", "via", "fe80:ec2::1"]
    internet6, vpc_host6 = datapath6.internet_ip6, datapath6.vpc_host_ip6
    assert internet6 is not None and vpc_host6 == ipaddress.IPv6Address("2001:db8:0:1ff::10")
    assert ping(node.netns, vpc_host6)
    assert ping(node.netns, internet6)
    assert ping(node.netns, datapath6.internet_ip)  # IPv4 as before
    with EchoServer(netns=datapath6.router.internet_netns, ip=internet6) as server:
        # No NAT and no public-IP rule for IPv6: the node's own address arrives.
        assert tcp_echo(node.netns, internet6, server.port) == "2001:db8:0:100::13"


def test_ipv6_prefix_is_routed_to_the_eni_and_source_checked(datapath6: Datapath, ec2: StatefulEc2) -> None:
    ec2.attach(
        "eni-eeee0001", instance_id="i-5", device_index=0, primary="10.0.0.14", ipv6="2001:db8:0:100::14"
    )
    node = datapath6.add_node(instance_id="i-5", name="n5")
    pod = "2001:db8:0:100:1::5"
    _ip(node.netns, "-6", "addr", "add", f"{pod}/128", "dev", "lo", "nodad")
    vpc_host6 = datapath6.vpc_host_ip6
    assert vpc_host6 is not None
    assert not ping(node.netns, vpc_host6, source=ipaddress.IPv6Address(pod), timeout=1)
    assert datapath6.router.dropped_by_srccheck("eni-eeee0001", family=6) > 0
    ec2.assign_ipv6_prefix("eni-eeee0001", "2001:db8:0:100:1::/80")
    assert "2001:db8:0:100:1::/80 via fe80::" in _ip(datapath6.router.vpc_netns, "-6", "route")
    assert ping(node.netns, vpc_host6, source=ipaddress.IPv6Address(pod))
    assert datapath6.router.dropped_by_srccheck("eni-eeee0001", family=6) == 0
