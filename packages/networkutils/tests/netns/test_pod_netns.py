from __future__ import annotations

import os
import re
import threading
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.netlink import open_netlink
from vpccni.networkutils.netns import ThreadNetnsNetlink, run_in_netns
from vpccni.networkutils.pod import PodInterface, PodWiring, PodWiringError, WiredPod


def node(make_netns) -> Any:
    host = make_netns("host")
    host.sh("ip", "link", "add", "ens5", "type", "veth", "peer", "name", "ens5p")
    host.sh("ip", "addr", "add", "10.0.0.5/32", "dev", "ens5")
    host.sh("ip", "link", "set", "ens5", "up")
    return host


def wire(host: Any, pod: Any, spec: PodInterface) -> WiredPod:
    return host.run(lambda nl: PodWiring(host=nl, namespaces=ThreadNetnsNetlink()).wire(pod.fd, spec))


def unwire(host: Any, spec: PodInterface, pod_fd: int | None = None) -> None:
    host.run(lambda nl: PodWiring(host=nl, namespaces=ThreadNetnsNetlink()).unwire(spec, pod_fd))


def verify(host: Any, pod: Any, spec: PodInterface) -> list[str]:
    return host.run(lambda nl: PodWiring(host=nl, namespaces=ThreadNetnsNetlink()).verify(pod.fd, spec))


def rules(ns: Any) -> list[tuple[int, str, str, str]]:
    return [(r["priority"], r["src"], r.get("dst", ""), str(r["table"])) for r in ns.ip_json("rule")]


def received(ping_output: str) -> int:
    found = re.search(r"(\d+) packets received", ping_output)
    return int(found.group(1)) if found else 0


def spec_for(name: str, ip: str, table: int = 254) -> PodInterface:
    return PodInterface(
        host_veth=host_veth_name("default", name), ip=ip_address(ip), route_table=table, mtu=9001
    )


POD6_A, POD6_B = "2001:db8:0:100:1::5", "2001:db8:0:100:1::6"


def rules6(ns: Any) -> list[tuple[int, str, str, str]]:
    return [(r["priority"], r["src"], r.get("dst", ""), str(r["table"])) for r in ns.ip_json("-6", "rule")]


def test_wire_gives_exact_pod_and_host_state(make_netns) -> None:
    host, pod = node(make_netns), make_netns("pod")
    spec = spec_for("nginx", "10.0.1.5", table=2)
    wired = wire(host, pod, spec)

    [eth0] = pod.ip_json("addr", "show", "dev", "eth0")
    assert eth0["mtu"] == 9001 and "UP" in eth0["flags"]
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] == [
        ("10.0.1.5", 32)
    ]
    assert eth0["address"] == wired.container_mac
    routes = {(r["dst"], r.get("gateway"), r.get("scope")) for r in pod.ip_json("route")}
    assert routes == {("default", "169.254.1.1", None), ("169.254.1.1", None, "link")}
    [neigh] = pod.ip_json("neigh", "show", "dev", "eth0")
    assert (neigh["dst"], neigh["lladdr"], neigh["state"]) == ("169.254.1.1", wired.host_mac, ["PERMANENT"])

    [veth] = host.ip_json("link", "show", "dev", spec.host_veth)
    assert veth["address"] == wired.host_mac and "UP" in veth["flags"] and veth["mtu"] == 9001
    assert int(wired.host_mac[:2], 16) & 0x03 == 0x02
    for key, want in (("accept_ra", "0"), ("accept_redirects", "1"), ("forwarding", "0")):
        assert host.sh("cat", f"/proc/sys/net/ipv6/conf/{spec.host_veth}/{key}").strip() == want, key
    assert host.sh("cat", f"/proc/sys/net/ipv6/conf/{spec.host_veth}/accept_redirects").strip() == "1"
    host_routes = [(r["dst"], r["dev"], r.get("scope")) for r in host.ip_json("route")]
    assert ("10.0.1.5", spec.host_veth, "link") in host_routes
    assert rules(host) == [
        (0, "all", "", "local"),
        (512, "all", "10.0.1.5", "main"),
        (1536, "10.0.1.5", "", "2"),
        (32766, "all", "", "main"),
        (32767, "all", "", "default"),
    ]
    assert verify(host, pod, spec) == []


def test_ping_between_two_wired_pods(make_netns) -> None:
    host, pod_a, pod_b = node(make_netns), make_netns("pa"), make_netns("pb")
    wire(host, pod_a, spec_for("a", "10.0.1.5"))
    wire(host, pod_b, spec_for("b", "10.0.1.6"))
    host.run(lambda nl: nl.write_sysctl("net/ipv4/ip_forward", "1"))
    # Several probes, any answer counts: a loaded machine may drop the first while ARP resolves.
    assert (
        received(pod_a.sh("busybox", "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.1.6", check=False)) > 0
    )
    assert (
        received(pod_b.sh("busybox", "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.1.5", check=False)) > 0
    )


def test_teardown_leaves_nothing_and_is_idempotent(make_netns) -> None:
    host, pod = node(make_netns), make_netns("pod")
    spec = spec_for("nginx", "10.0.1.5", table=3)
    wire(host, pod, spec)
    unwire(host, spec, pod.fd)
    unwire(host, spec, pod.fd)
    assert sorted(link["ifname"] for link in host.ip_json("link")) == ["ens5", "ens5p", "lo"]
    assert [link["ifname"] for link in pod.ip_json("link")] == ["lo"]
    assert all(r["dst"] != "10.0.1.5" for r in host.ip_json("route"))
    assert rules(host) == [(0, "all", "", "local"), (32766, "all", "", "main"), (32767, "all", "", "default")]


def test_teardown_keeping_the_veth_removes_every_rule_of_the_ip_in_any_table(make_netns) -> None:
    host, pod = node(make_netns), make_netns("pod")
    spec = spec_for("nginx", "10.0.1.5", table=3)
    wire(host, pod, spec)
    # Older layouts: one from-pod rule per VPC CIDR, and a rule of another pod that must stay.
    host.sh("ip", "rule", "add", "from", "10.0.1.5", "to", "10.1.0.0/16", "lookup", "4", "prio", "1536")
    host.sh("ip", "rule", "add", "to", "10.0.1.6", "lookup", "main", "prio", "512")
    host.run(
        lambda nl: PodWiring(host=nl, namespaces=ThreadNetnsNetlink()).unwire(spec, pod.fd, keep_veth=True)
    )
    assert rules(host) == [
        (0, "all", "", "local"), (512, "all", "10.0.1.6", "main"),
        (32766, "all", "", "main"), (32767, "all", "", "default"),
    ]  # fmt: skip
    assert all(r["dst"] != "10.0.1.5" for r in host.ip_json("route"))
    assert spec.host_veth in {link["ifname"] for link in host.ip_json("link")}
    # Wiring the same pod again (a new sandbox) replaces the leftover veth.
    again = make_netns("pod2")
    wire(host, again, spec)
    assert verify(host, again, spec) == []
    assert [link["ifname"] for link in pod.ip_json("link")] == ["lo"]


def test_teardown_of_an_extra_interface_of_a_running_pod_deletes_its_veth(make_netns) -> None:
    # Found by nox -s chaos: an ADD of eth1 into a live pod's namespace, then its DEL, left the host veth
    # (kept "to go with the namespace", which lives as long as the pod).
    host, pod = node(make_netns), make_netns("pod")
    first = spec_for("nginx", "10.0.1.5")
    extra = PodInterface(host_veth=host_veth_name("default", "nginx", index=1), ip=IPv4Address("10.0.1.6"),
                         ifname="eth1", mtu=9001, index=1)  # fmt: skip
    wire(host, pod, first)
    wire(host, pod, extra)

    def keep_veth_unwire(spec: PodInterface) -> None:
        host.run(
            lambda nl: PodWiring(host=nl, namespaces=ThreadNetnsNetlink()).unwire(
                spec, pod.fd, keep_veth=True
            )
        )

    keep_veth_unwire(extra)
    host_links = {link["ifname"] for link in host.ip_json("link")}
    assert extra.host_veth not in host_links and first.host_veth in host_links
    assert sorted(link["ifname"] for link in pod.ip_json("link")) == ["eth0", "lo"]
    keep_veth_unwire(first)  # the pod's last interface: its veth goes with the namespace
    assert first.host_veth in {link["ifname"] for link in host.ip_json("link")}


def test_an_extra_interface_never_takes_a_live_interfaces_routes(make_netns) -> None:
    # Found by nox -s chaos: ADD of an interface not named eth<N> into a running pod replaced eth0's gateway
    # and default routes; its DEL then left the pod with no route at all.
    host, pod = node(make_netns), make_netns("pod")
    first = spec_for("nginx", "10.0.1.5")
    wire(host, pod, first)
    extra = PodInterface(host_veth=host_veth_name("default", "nginx-x"), ip=IPv4Address("10.0.1.6"),
                         ifname="net1", mtu=9001)  # fmt: skip
    with pytest.raises(PodWiringError, match="already routes"):
        wire(host, pod, extra)
    assert verify(host, pod, first) == []
    assert extra.host_veth not in {link["ifname"] for link in host.ip_json("link")}
    assert sorted(link["ifname"] for link in pod.ip_json("link")) == ["eth0", "lo"]


def test_teardown_after_pod_netns_is_gone(make_netns) -> None:
    host, pod = node(make_netns), make_netns("pod")
    spec = spec_for("nginx", "10.0.1.5", table=2)
    wire(host, pod, spec)
    pod.delete()
    unwire(host, spec)
    unwire(host, spec)
    assert sorted(link["ifname"] for link in host.ip_json("link")) == ["ens5", "ens5p", "lo"]
    assert rules(host) == [(0, "all", "", "local"), (32766, "all", "", "main"), (32767, "all", "", "default")]


def test_verify_reports_removed_route(make_netns) -> None:
    host, pod = node(make_netns), make_netns("pod")
    spec = spec_for("nginx", "10.0.1.5", table=2)
    wire(host, pod, spec)
    pod.sh("ip", "route", "del", "169.254.1.1/32", "dev", "eth0")
    host.sh("ip", "rule", "del", "from", "10.0.1.5", "lookup", "2", "prio", "1536")
    assert verify(host, pod, spec) == [
        "rule from 10.0.1.5 lookup 2 prio 1536 missing",
        "route 169.254.1.1/32 dev eth0 scope link missing in pod netns",
    ]


def test_concurrent_wiring_through_one_shared_handle(make_netns) -> None:
    host = node(make_netns)
    pods = [make_netns(f"p{i}") for i in range(6)]
    specs = [spec_for(f"pod{i}", f"10.0.3.{i + 1}", table=2) for i in range(6)]
    errors: list[BaseException] = []

    def body() -> None:
        # Worker threads are started from inside the host namespace, so they inherit it (as ipamd's do).
        with open_netlink() as shared:
            wiring = PodWiring(host=shared, namespaces=ThreadNetnsNetlink())

            def one(pod: Any, spec: PodInterface) -> None:
                try:
                    wiring.wire(pod.fd, spec)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=one, args=pair) for pair in zip(pods, specs, strict=True)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    run_in_netns(host.fd, body)
    assert errors == []
    for pod, spec in zip(pods, specs, strict=True):
        assert verify(host, pod, spec) == []
    macs = {link["address"] for link in host.ip_json("link") if link["ifname"].startswith("eni")}
    assert len(macs) == 6


def test_netns_thread_never_leaks_into_caller(make_netns) -> None:
    pod = make_netns("pod")
    before = os.readlink("/proc/thread-self/ns/net")
    inside = run_in_netns(pod.fd, lambda: os.readlink("/proc/thread-self/ns/net"))
    assert inside != before
    assert os.readlink("/proc/thread-self/ns/net") == before


def test_second_interface_in_the_same_pod(make_netns) -> None:
    host, pod = node(make_netns), make_netns("pod")
    first = spec_for("multi", "10.0.1.5", table=2)
    second = PodInterface(
        host_veth=host_veth_name("default", "multi", index=1),
        ip=IPv4Address("10.0.4.5"),
        ifname="mNicIf1",
        route_table=3,
        index=1,
    )
    wire(host, pod, first)
    wire(host, pod, second)
    assert verify(host, pod, first) == [] and verify(host, pod, second) == []
    table1 = {(r["dst"], r.get("gateway")) for r in pod.ip_json("route", "show", "table", "1")}
    assert table1 == {("default", "169.254.1.2"), ("169.254.1.2", None)}
    assert [(r["priority"], r["src"], r["table"]) for r in pod.ip_json("rule") if r["priority"] == 1] == [
        (1, "10.0.4.5", "1")
    ]
    unwire(host, second, pod.fd)
    assert all(r["priority"] != 1 for r in pod.ip_json("rule"))
    assert verify(host, pod, first) == []


def test_ipv6_pod_gets_its_128_the_link_local_gateway_and_no_dad(make_netns) -> None:
    host, pod = node(make_netns), make_netns("pod6")
    spec = spec_for("web6", POD6_A)
    wired = wire(host, pod, spec)
    assert wired.gateway == IPv6Address("fe80::1") and wired.ip == spec.ip

    [eth0] = pod.ip_json("-6", "addr", "show", "dev", "eth0")
    addresses = {a["local"]: a for a in eth0["addr_info"] if a}
    pod_address = addresses[POD6_A]
    assert pod_address["prefixlen"] == 128 and not pod_address.get("tentative")
    # Neither end's link-local address waits for DAD: the host can solicit the pod at once.
    assert not any(a.get("tentative") for a in addresses.values())
    routes = {(r["dst"], r.get("gateway"), r["dev"]) for r in pod.ip_json("-6", "route")}
    assert {("default", "fe80::1", "eth0"), ("fe80::1", None, "eth0")} <= routes
    neighbours = {n["dst"]: n for n in pod.ip_json("-6", "neigh", "show", "dev", "eth0")}
    gateway = neighbours["fe80::1"]
    assert gateway["lladdr"] == wired.host_mac and gateway["state"] == ["PERMANENT"]
    for key, want in (("disable_ipv6", "0"), ("accept_dad", "0")):
        assert pod.sh("cat", f"/proc/sys/net/ipv6/conf/eth0/{key}").strip() == want, key
    assert pod.sh("cat", "/proc/sys/net/ipv6/conf/lo/disable_ipv6").strip() == "0"

    host_sysctls = (("accept_ra", "0"), ("accept_redirects", "1"), ("forwarding", "0"), ("accept_dad", "0"))
    for key, want in host_sysctls:
        assert host.sh("cat", f"/proc/sys/net/ipv6/conf/{spec.host_veth}/{key}").strip() == want, key
    host_routes = [(r["dst"], r["dev"]) for r in host.ip_json("-6", "route")]
    assert (POD6_A, spec.host_veth) in host_routes
    assert (512, "all", POD6_A, "main") in rules6(host)
    assert rules(host) == [(0, "all", "", "local"), (32766, "all", "", "main"), (32767, "all", "", "default")]
    assert verify(host, pod, spec) == []


def test_ping_between_two_ipv6_pods_right_after_wiring(make_netns) -> None:
    host, pod_a, pod_b = node(make_netns), make_netns("pa6"), make_netns("pb6")
    host.run(lambda nl: nl.write_sysctl("net/ipv6/conf/all/forwarding", "1"))
    wire(host, pod_a, spec_for("a6", POD6_A))
    wire(host, pod_b, spec_for("b6", POD6_B))
    # No wait for DAD: the first probes already find both ends usable.
    for src, dst in ((pod_a, POD6_B), (pod_b, POD6_A)):
        out = src.sh("busybox", "ping6", "-c", "3", "-i", "0.2", "-W", "2", dst, check=False)
        assert received(out) > 0, out


def test_ipv6_teardown_leaves_nothing(make_netns) -> None:
    host, pod = node(make_netns), make_netns("pod6")
    spec = spec_for("web6", POD6_A)
    wire(host, pod, spec)
    unwire(host, spec, pod.fd)
    unwire(host, spec, pod.fd)
    assert sorted(link["ifname"] for link in host.ip_json("link")) == ["ens5", "ens5p", "lo"]
    assert all(r["dst"] != POD6_A for r in host.ip_json("-6", "route"))
    assert rules6(host) == [(0, "all", "", "local"), (32766, "all", "", "main")]
