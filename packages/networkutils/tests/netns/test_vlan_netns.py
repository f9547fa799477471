"""Branch-ENI (VLAN) wiring against the real kernel: a "VPC" namespace at the far end of the trunk's link
answers on a VLAN sub-interface (as the VPC router answers a branch ENI), and real packets show that a
branch pod's traffic leaves tagged with its VLAN in both enforcing modes; teardown from the facts a CNI
result carries leaves nothing; the raw adapter and pyroute2 agree on VLAN links and `iif` rules."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from ipaddress import IPv4Address
from typing import Any

import pytest
from pyroute2 import IPRoute
from vpccni.networkutils import softvlan
from vpccni.networkutils.model import Rule
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.netlink import open_netlink
from vpccni.networkutils.netns import ThreadNetnsNetlink
from vpccni.networkutils.pod import PodInterface, PodWiring
from vpccni.networkutils.pyroute_netlink import PyrouteNetlink
from vpccni.networkutils.tables import route_table_for_vlan
from vpccni.networkutils.vlan import BranchPodInterface, BranchPodWiring, EnforcingMode

ETH_P_ALL, SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 0x0003, 263, 8, 0x10
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
BRANCH_MAC = "0a:bb:cc:00:00:07"
POD_IP = "10.0.16.40"
GW = "10.0.16.1"


def node_and_vpc(make_netns) -> tuple[Any, Any]:
    """The node with its primary address and a trunk link `eth1` whose other end is in the VPC namespace,
    which carries VLAN 7 on it with the branch subnet's gateway, and knows the branch ENI's MAC."""
    host, vpc = make_netns("node"), make_netns("vpc")
    host.sh("ip", "link", "add", "ens5", "type", "veth", "peer", "name", "ens5p")
    host.sh("ip", "addr", "add", "10.0.0.5/32", "dev", "ens5")
    host.sh("ip", "link", "set", "ens5", "up")
    host.sh("ip", "link", "add", "eth1", "type", "veth", "peer", "name", "trk", "netns", vpc.name)
    host.sh("ip", "link", "set", "eth1", "up")
    host.run(lambda nl: nl.write_sysctl("net/ipv4/ip_forward", "1"))  # as HostNetwork sets it
    vpc.sh("ip", "link", "set", "trk", "up")
    # The far end's VLAN sub-interface, made as the node's (a kernel VLAN link, or its tc BPF stand-in).
    vpc.run(lambda nl: nl.add_vlan(name="trk.7", parent="trk", vlan_id=7, mac="0a:cc:00:00:00:01"))
    vpc.sh("ip", "addr", "add", f"{GW}/20", "dev", "trk.7")
    vpc.sh("ip", "link", "set", "trk.7", "up")
    vpc.sh("ip", "neigh", "replace", POD_IP, "lladdr", BRANCH_MAC, "dev", "trk.7", "nud", "permanent")
    return host, vpc


class Capture:
    """Every frame seen on a link while in the `with` block, with its 802.1Q tag as the kernel reports it
    (`PACKET_AUXDATA`): (ethertype, VLAN id or None)."""

    def __init__(self, netns: Any, ifname: str) -> None:
        self.frames: list[tuple[int, int | None]] = []
        self._sock: socket.socket = netns.run(lambda _: self._open(ifname))
        self._thread = threading.Thread(target=self._read, daemon=True)

    @staticmethod
    def _open(ifname: str) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((ifname, 0))
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.settimeout(0.2)
        return sock

    def _read(self) -> None:
        while not self._stop:
            try:
                data, ancdata, _, _ = self._sock.recvmsg(65535, socket.CMSG_SPACE(AUXDATA.size))
            except TimeoutError:
                continue
            except OSError:
                return
            vlan = None
            for level, kind, raw in ancdata:
                if level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, _, _, _, _, tci, _ = AUXDATA.unpack_from(raw)
                    vlan = tci & 0x0FFF if status & TP_STATUS_VLAN_VALID else None
            self.frames.append((int.from_bytes(data[12:14], "big"), vlan))

    def vlans(self) -> set[int | None]:
        return {vlan for ethertype, vlan in self.frames if ethertype in (0x0800, 0x0806)}

    def __enter__(self) -> Capture:
        self._stop = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop = True
        self._thread.join()
        self._sock.close()


def assert_vlan_link(ns: Any, name: str, *, parent: str, vlan_id: int, mac: str) -> None:
    """A kernel VLAN link on `parent`, or (kernel without 802.1Q) its stand-in: a veth whose hidden peer
    and `parent` carry the tagging programs."""
    [link] = ns.ip_json("-d", "link", "show", "dev", name)
    assert link["address"] == mac and "UP" in link["flags"]
    if link["linkinfo"]["info_kind"] == "vlan":
        assert link["link"] == parent and link["linkinfo"]["info_data"]["id"] == vlan_id
        return
    assert link["linkinfo"]["info_kind"] == "veth" and link["link"] == softvlan.peer_name(name)
    filters = ns.sh("tc", "filter", "show", "dev", parent, "ingress")
    assert f"pref {vlan_id} bpf" in filters and f"untag{vlan_id} direct-action" in filters
    peer = ns.sh("tc", "filter", "show", "dev", softvlan.peer_name(name), "ingress")
    assert f"tag{vlan_id} direct-action" in peer


def spec(mode: EnforcingMode) -> BranchPodInterface:
    prefix = "vlan" if mode is EnforcingMode.STRICT else "eni"
    pod = PodInterface(
        host_veth=host_veth_name("db", "orders", prefix=prefix),
        ip=IPv4Address(POD_IP),
        route_table=route_table_for_vlan(7),
    )
    return BranchPodInterface(
        pod=pod, vlan_id=7, branch_mac=BRANCH_MAC, gateway=IPv4Address(GW), trunk_link="eth1", mode=mode
    )


def wiring(nl: Any) -> BranchPodWiring:
    return BranchPodWiring(host=nl, pods=PodWiring(host=nl, namespaces=ThreadNetnsNetlink()))


def received(ping_output: str) -> int:
    found = re.search(r"(\d+) packets received", ping_output)
    return int(found.group(1)) if found else 0


def host_rules(host: Any) -> list[tuple[int, str, str]]:
    return [
        (r["priority"], r.get("iif", ""), str(r["table"]))
        for r in host.ip_json("rule")
        if r["priority"] in (10, 512, 1536)
    ]


@pytest.mark.parametrize("mode", list(EnforcingMode))
def test_branch_pod_reaches_its_gateway_through_its_vlan(make_netns, mode: EnforcingMode) -> None:
    host, vpc = node_and_vpc(make_netns)
    pod = make_netns("pod")
    branch = spec(mode)
    host.run(lambda nl: wiring(nl).wire(pod.fd, branch))

    assert_vlan_link(host, "vlan.eth.7", parent="eth1", vlan_id=7, mac=BRANCH_MAC)
    table = {(r["dst"], r.get("gateway"), r["dev"]) for r in host.ip_json("route", "show", "table", "107")}
    assert {(GW, None, "vlan.eth.7"), ("default", GW, "vlan.eth.7")} <= table
    veth = branch.pod.host_veth
    if mode is EnforcingMode.STRICT:
        assert (POD_IP, None, veth) in table
        assert host_rules(host) == [(10, "vlan.eth.7", "107"), (10, veth, "107")]
    else:
        assert host_rules(host) == [(512, "", "main"), (1536, "", "107")]
    assert host.run(lambda nl: wiring(nl).verify(pod.fd, branch)) == []

    with Capture(vpc, "trk") as wire:
        out = pod.sh("busybox", "ping", "-c", "3", "-i", "0.2", "-W", "2", GW, check=False)
    assert received(out) > 0, out
    # What crossed the trunk's wire: every IPv4 frame of the pod carried 802.1Q tag 7 (and ARP too).
    assert wire.frames and wire.vlans() == {7}, wire.frames


@pytest.mark.parametrize("mode", list(EnforcingMode))
def test_teardown_from_a_cni_result_leaves_nothing(make_netns, mode: EnforcingMode) -> None:
    host, _ = node_and_vpc(make_netns)
    pod = make_netns("pod")
    branch = spec(mode)
    host.run(lambda nl: wiring(nl).wire(pod.fd, branch))
    bare = PodInterface(host_veth=branch.pod.host_veth, ip=IPv4Address(POD_IP))
    for _ in range(2):
        host.run(lambda nl: wiring(nl).unwire(bare, 7))
        names = {link["ifname"] for link in host.ip_json("link")}
        assert names == {"lo", "ens5", "ens5p", "eth1"}
        assert host.ip_json("route", "show", "table", "107") == []
        assert host_rules(host) == []
        assert POD_IP not in host.sh("ip", "route", "show", "table", "main")


def test_vlan_links_and_iif_rules_read_back_the_same_through_pyroute2(make_netns) -> None:
    host, _ = node_and_vpc(make_netns)

    def both(_: object) -> tuple[Any, Any]:
        with open_netlink() as fast, PyrouteNetlink(IPRoute()) as slow:
            fast.set_link("eth1", mtu=9001)  # as an ENI's link
            fast.add_vlan(name="vlan.eth.9", parent="eth1", vlan_id=9, mac="0a:00:00:00:00:09")
            fast.add_rule(Rule(priority=10, table=109, iif="vlan.eth.9"))
            slow.add_rule(Rule(priority=10, table=108, iif="eth1"))
            got = (fast.links(), fast.rules()), (slow.links(), slow.rules())
            assert fast.delete_rules(priority=10, table=109) == 1
            assert slow.delete_rules(priority=10, iif="eth1") == 1
            assert fast.delete_rules(priority=10, table=109) == 0
            for adapter in (fast, slow):
                with pytest.raises(ValueError, match="would delete every rule"):
                    adapter.delete_rules(priority=10)
            with pytest.raises(LookupError):
                fast.add_vlan(name="vlan.eth.5", parent="eth9", vlan_id=5, mac="0a:00:00:00:00:05")
            return got

    (links, rules), (want_links, want_rules) = host.run(both)
    assert links == want_links and rules == want_rules
    by_name = {link.name: link for link in links}
    assert by_name["vlan.eth.9"].mtu == by_name["eth1"].mtu == 9001  # a VLAN link takes its parent's MTU
    assert Rule(priority=10, table=109, iif="vlan.eth.9") in rules
    assert Rule(priority=10, table=108, iif="eth1") in rules


def test_soft_and_kernel_vlan_links_interoperate_where_the_kernel_has_vlans(make_netns) -> None:
    """On a kernel with 802.1Q: pyroute2 makes a kernel VLAN link at the far end, and the raw adapter's
    link (kernel) talks to it; the tc BPF stand-in is what the other tests exercise on kernels without."""
    host, vpc = make_netns("node"), make_netns("far")
    host.sh("ip", "link", "add", "eth1", "type", "veth", "peer", "name", "trk", "netns", vpc.name)

    def kernel_vlan(_: object) -> bool:
        with PyrouteNetlink(IPRoute()) as slow:
            try:
                slow.add_vlan(name="trk.3", parent="trk", vlan_id=3, mac="0a:cc:00:00:00:03")
            except Exception as exc:  # pyroute2's NetlinkError: EOPNOTSUPP without 802.1Q
                if getattr(exc, "code", None) == 95:
                    return False
                raise
        return True

    if not vpc.run(kernel_vlan):
        pytest.skip("this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q is not set)")
    host.run(lambda nl: nl.add_vlan(name="vlan.eth.3", parent="eth1", vlan_id=3, mac="0a:bb:00:00:00:03"))
    for ns, link, ip in ((host, "vlan.eth.3", "10.9.0.1/24"), (vpc, "trk.3", "10.9.0.2/24")):
        ns.sh("ip", "link", "set", link.split(".")[0] if ns is vpc else "eth1", "up")
        ns.sh("ip", "addr", "add", ip, "dev", link)
        ns.sh("ip", "link", "set", link, "up")
    out = host.sh("busybox", "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.9.0.2", check=False)
    assert received(out) > 0, out
