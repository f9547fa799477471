"""The raw rtnetlink adapter (`open_netlink()`) against the real kernel: every operation, checked with `ip`
and against pyroute2's adapter, and how each kernel error surfaces."""

from __future__ import annotations

import errno
import os
import threading
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

import pytest
from pyroute2 import IPRoute
from vpccni.networkutils import rtnl
from vpccni.networkutils.model import Address, Neighbour, Route, Rule, Scope
from vpccni.networkutils.netlink import Netlink, open_netlink
from vpccni.networkutils.pyroute_netlink import PyrouteNetlink
from vpccni.networkutils.rtnl import NetlinkError


def test_fast_dumps_equal_pyroute2s(make_netns) -> None:
    ns = make_netns("dump")
    ns.sh("ip", "link", "add", "veth0", "mtu", "9001", "type", "veth", "peer", "name", "veth1")
    ns.sh("ip", "link", "set", "veth0", "up")
    ns.sh("ip", "link", "add", "br0", "mtu", "1400", "type", "bridge")
    for i in range(300):  # more than one read of the socket
        ns.sh(
            "ip",
            "rule",
            "add",
            "from",
            f"10.0.{i // 250}.{i % 250}",
            "lookup",
            str(2 + i % 3),
            "prio",
            "1536",
        )
    ns.sh("ip", "rule", "add", "to", "10.1.0.0/16", "lookup", "300", "prio", "512")
    ns.sh("ip", "rule", "add", "fwmark", "0x80/0x80", "lookup", "main", "prio", "1024")
    ns.sh("ip", "rule", "add", "from", "10.0.0.0/8", "to", "10.2.0.0/16", "lookup", "main", "prio", "1535")
    ns.sh("ip", "-6", "rule", "add", "to", "2001:db8::5/128", "lookup", "main", "prio", "512")
    ns.sh("ip", "-6", "rule", "add", "fwmark", "0x80/0x80", "lookup", "main", "prio", "1024")

    def both(_: object) -> tuple[tuple[list, list], tuple[list, list]]:
        with open_netlink() as fast, PyrouteNetlink(IPRoute()) as slow:
            return (fast.links(), fast.rules()), (slow.links(), slow.rules())

    (links, rules), (want_links, want_rules) = ns.run(both)
    assert links == want_links
    assert {link.name: (link.kind, link.mtu, link.up) for link in links} == {
        "lo": ("", 65536, True), "veth0": ("veth", 9001, True), "veth1": ("veth", 1500, False),
        "br0": ("bridge", 1400, False),
    }  # fmt: skip
    assert rules == want_rules
    assert len([r for r in rules if r.family == 4]) == 306
    assert len([r for r in rules if r.family == 6]) == 4  # local (0) and main (32766) are the kernel's
    assert Rule(priority=1024, table=254, fwmark=0x80, fwmask=0x80) in rules
    assert Rule(priority=1024, table=254, fwmark=0x80, fwmask=0x80, family=6) in rules
    assert Rule(priority=512, table=300, dst=IPv4Network("10.1.0.0/16")) in rules
    assert Rule(priority=512, table=254, dst=IPv6Network("2001:db8::5/128")) in rules


def test_link_by_name_equals_pyroute2s_and_absent_names_are_none(make_netns) -> None:
    ns = make_netns("get")
    ns.sh("ip", "link", "add", "veth0", "mtu", "9001", "type", "veth", "peer", "name", "veth1")

    def both(_: object) -> tuple[list, list]:
        names = ("lo", "veth0", "veth1", "nope", "x" * 15, "x" * 16, "")
        with open_netlink() as fast, PyrouteNetlink(IPRoute()) as slow:
            return [fast.link(n) for n in names], [slow.link(n) for n in names]

    fast, slow = ns.run(both)
    assert fast == slow
    assert [link.name if link else None for link in fast] == ["lo", "veth0", "veth1", None, None, None, None]


def _veth(ns, name: str = "veth0", peer: str = "veth1") -> None:
    ns.sh("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
    ns.sh("ip", "link", "set", peer, "up")


def test_add_veth_puts_the_peer_in_the_namespace_given_by_fd(make_netns) -> None:
    host, pod = make_netns("vh"), make_netns("vp")

    def create(nl: Netlink) -> None:
        nl.add_veth(
            name="enitest0", mac="02:aa:bb:cc:dd:01", mtu=9001, peer_name="eth0", peer_netns_fd=pod.fd
        )
        with pytest.raises(NetlinkError) as exists:  # the same name again
            nl.add_veth(
                name="enitest0", mac="02:aa:bb:cc:dd:02", mtu=9001, peer_name="eth1", peer_netns_fd=pod.fd
            )
        assert exists.value.errno == errno.EEXIST and exists.value.code == errno.EEXIST
        assert isinstance(exists.value, OSError)

    host.run(create)
    (link,) = host.ip_json("link", "show", "enitest0")
    assert link["address"] == "02:aa:bb:cc:dd:01" and link["mtu"] == 9001 and "UP" not in link["flags"]
    (peer,) = pod.ip_json("link", "show", "eth0")
    assert peer["mtu"] == 9001 and "UP" not in peer["flags"]


def test_set_link_by_name_and_missing_links(make_netns) -> None:
    ns = make_netns("set")
    _veth(ns)

    def change(nl: Netlink) -> None:
        nl.set_link("veth0", up=True)
        nl.set_link("veth0", mtu=1400)  # the MTU alone leaves it up
        nl.set_link("veth0")  # nothing to change, the link exists
        for name in ("nope", "x" * 16, ""):
            with pytest.raises(LookupError):
                nl.set_link(name, up=True)
        with pytest.raises(LookupError):
            nl.set_link("nope")

    ns.run(change)
    (link,) = ns.ip_json("link", "show", "veth0")
    assert "UP" in link["flags"] and link["mtu"] == 1400
    ns.run(lambda nl: nl.set_link("veth0", up=False, mtu=1500))
    (link,) = ns.ip_json("link", "show", "veth0")
    assert "UP" not in link["flags"] and link["mtu"] == 1500


def test_delete_link_reports_whether_it_was_there(make_netns) -> None:
    ns = make_netns("del")
    _veth(ns)
    deleted = ns.run(lambda nl: [nl.delete_link("veth0"), nl.delete_link("veth0"), nl.delete_link("x" * 16)])
    assert deleted == [True, False, False]
    assert ns.ip_json("link", "show", "type", "veth") == []


def test_addresses_replace_list_and_delete(make_netns) -> None:
    ns = make_netns("addr")
    _veth(ns)
    address = Address(ifname="veth0", interface=IPv4Interface("10.0.1.5/32"))

    def run(nl: Netlink) -> tuple[list[Address], list[Address], list[bool]]:
        nl.add_address(address)
        nl.add_address(address)  # replace: no error when present
        nl.add_address(Address(ifname="veth1", interface=IPv4Interface("10.0.2.1/24")))
        listed = nl.addresses("veth0")
        with pytest.raises(LookupError):
            nl.add_address(Address(ifname="nope", interface=IPv4Interface("10.0.1.6/32")))
        gone = [nl.delete_address(address), nl.delete_address(address)]
        gone.append(nl.delete_address(Address(ifname="nope", interface=IPv4Interface("10.0.1.6/32"))))
        return listed, nl.addresses("nope"), gone

    listed, missing, gone = ns.run(run)
    assert listed == [address] and missing == [] and gone == [True, False, False]
    (veth1,) = ns.ip_json("-4", "addr", "show", "veth1")
    assert [(a["local"], a["prefixlen"]) for a in veth1["addr_info"]] == [("10.0.2.1", 24)]


def test_routes_replace_list_delete_and_kernel_errors(make_netns) -> None:
    ns = make_netns("route")
    _veth(ns)
    gw = Route(dst=IPv4Network("169.254.1.1/32"), ifname="veth0", scope=Scope.LINK, table=7)
    default = Route(dst=IPv4Network("0.0.0.0/0"), ifname="veth0", gateway=IPv4Address("169.254.1.1"), table=7)
    host = Route(dst=IPv4Network("10.0.1.5/32"), ifname="veth0", scope=Scope.LINK)

    def run(nl: Netlink) -> tuple[list[Route], list[Route], list[bool]]:
        nl.set_link("veth0", up=True)
        for route in (gw, default, host, host):  # replace twice: no error
            nl.replace_route(route)
        with pytest.raises(NetlinkError) as unreachable:  # a gateway no route leads to
            nl.replace_route(
                Route(dst=IPv4Network("10.9.0.0/16"), ifname="veth0", gateway=IPv4Address("10.8.0.1"))
            )
        assert unreachable.value.errno == errno.ENETUNREACH
        assert "unreachable" in str(unreachable.value).lower()  # strerror, and the kernel's reason if any
        with pytest.raises(LookupError):
            nl.replace_route(Route(dst=IPv4Network("10.0.1.6/32"), ifname="nope"))
        table7, main = nl.routes(7), nl.routes(254)
        deleted = [nl.delete_route(host), nl.delete_route(host)]
        deleted.append(nl.delete_route(Route(dst=IPv4Network("10.0.1.6/32"), ifname="nope")))
        return table7, main, deleted

    table7, main, deleted = ns.run(run)
    assert sorted(table7, key=str) == sorted([gw, default], key=str)
    assert host in main and deleted == [True, False, False]

    def pyroute2_routes(_: Netlink) -> list[Route]:
        with PyrouteNetlink(IPRoute()) as slow:
            return slow.routes(7)

    with_pyroute2 = ns.run(pyroute2_routes)
    assert sorted(with_pyroute2, key=str) == sorted(table7, key=str)
    routes = ns.ip_json("route", "show", "table", "7")
    assert {r["dst"] for r in routes} == {"169.254.1.1", "default"}
    assert all(r.get("protocol", "boot") == "boot" for r in routes)  # as `ip route` and upstream add them


def test_delete_route_matches_routes_of_any_protocol(make_netns) -> None:
    ns = make_netns("rproto")
    _veth(ns)
    ns.sh("ip", "link", "set", "veth0", "up")
    ns.sh("ip", "route", "add", "10.0.1.5/32", "dev", "veth0", "scope", "link", "proto", "static")
    route = Route(dst=IPv4Network("10.0.1.5/32"), ifname="veth0", scope=Scope.LINK)
    assert ns.run(lambda nl: nl.delete_route(route)) is True
    assert ns.ip_json("route", "show", "10.0.1.5/32") == []


def test_rules_add_list_delete_and_delete_by_selector(make_netns) -> None:
    ns = make_netns("rule")
    pod = IPv4Network("10.0.1.5/32")
    to_pod = Rule(priority=512, table=254, dst=pod)
    from_pod = Rule(priority=1536, table=3, src=pod)
    marked = Rule(priority=1024, table=254, fwmark=0x80, fwmask=0x80)

    def run(nl: Netlink) -> tuple[list[Rule], list[Rule], list[bool], int, int]:
        for rule in (to_pod, to_pod, from_pod, marked):  # an identical rule again is not an error
            nl.add_rule(rule)
        nl.add_rule(Rule(priority=1536, table=4, src=pod))  # an old layout's second from-pod rule
        nl.add_rule(Rule(priority=10_000, table=1000, src=pod))  # tables above 255 travel as FRA_TABLE
        listed = nl.rules()
        with PyrouteNetlink(IPRoute()) as slow:
            cross_check = slow.rules()
        deleted = [nl.delete_rule(marked), nl.delete_rule(marked)]
        with pytest.raises(ValueError):
            nl.delete_rules(priority=1536)
        from_count = nl.delete_rules(priority=1536, src=pod)
        return listed, cross_check, deleted, from_count, nl.delete_rules(priority=512, dst=pod)

    listed, cross_check, deleted, from_count, to_count = ns.run(run)
    assert {to_pod, from_pod, marked, Rule(priority=10_000, table=1000, src=pod)} <= set(listed)
    assert [r for r in listed if r == to_pod] == [to_pod]
    assert cross_check == listed
    assert deleted == [True, False] and from_count == 2 and to_count == 1
    assert {r["priority"] for r in ns.ip_json("rule", "show")} == {0, 10_000, 32766, 32767}


def test_neighbours_replace_and_list(make_netns) -> None:
    ns = make_netns("neigh")
    _veth(ns)
    gw = Neighbour(ifname="veth0", ip=IPv4Address("169.254.1.1"), mac="02:00:00:00:00:0a", permanent=True)

    def run(nl: Netlink) -> tuple[list[Neighbour], list[Neighbour]]:
        nl.set_link("veth0", up=True)
        nl.replace_neighbour(gw)
        nl.replace_neighbour(gw)
        with pytest.raises(LookupError):
            nl.replace_neighbour(Neighbour(ifname="nope", ip=gw.ip, mac=gw.mac))
        return nl.neighbours("veth0"), nl.neighbours("nope")

    listed, missing = ns.run(run)
    assert listed == [gw] and missing == []
    (entry,) = ns.ip_json("neigh", "show", "dev", "veth0")
    assert entry["lladdr"] == gw.mac and "PERMANENT" in entry["state"]


def test_an_abandoned_dump_does_not_confuse_the_next_request(make_netns) -> None:
    ns = make_netns("seq")
    for i in range(300):
        ns.sh("ip", "rule", "add", "from", f"10.0.{i // 250}.{i % 250}", "lookup", "5", "prio", "1536")

    def run(_: Netlink) -> tuple[str, int]:
        sock = rtnl.RtnlSocket.open()
        try:
            body = rtnl.FIB_RULE_HDR.pack(rtnl.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
            dump = sock.dump(rtnl.RTM_GETRULE, rtnl.RTM_NEWRULE, body)
            next(dump)
            dump.close()  # the rest of the dump stays queued on the socket
            found = sock.get(
                rtnl.RTM_GETLINK, rtnl.RTM_NEWLINK, rtnl.ifinfo() + rtnl.attr_str(rtnl.IFLA_IFNAME, "lo")
            )
            assert found is not None
            again = [m for m in sock.dump(rtnl.RTM_GETRULE, rtnl.RTM_NEWRULE, body)]
            return rtnl.decode_link(*found).name, len(again)
        finally:
            sock.close()

    assert ns.run(run) == ("lo", 303)  # the IPv4 family only: 300 and the kernel's three


def test_one_handle_serves_many_threads(make_netns) -> None:
    ns = make_netns("threads")
    errors: list[BaseException] = []

    def run(nl: Netlink) -> list[Rule]:
        def worker(n: int) -> None:
            try:
                for i in range(50):
                    rule = Rule(priority=1536, table=2 + n, src=IPv4Network(f"10.{n}.0.{i}/32"))
                    nl.add_rule(rule)
                    assert nl.link("lo") is not None
                    if i % 2:
                        assert nl.delete_rules(priority=1536, src=rule.src) == 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return nl.rules()

    rules = ns.run(run)
    assert errors == []
    assert len([r for r in rules if r.priority == 1536]) == 4 * 25


def test_a_closed_namespace_fd_is_a_kernel_error(make_netns) -> None:
    ns = make_netns("badfd")
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(NetlinkError) as err:
            ns.run(lambda nl: nl.add_veth(name="enibad0", mac="02:00:00:00:00:01", mtu=1500, peer_name="eth0",
                                          peer_netns_fd=fd))  # fmt: skip
    finally:
        os.close(fd)
    assert err.value.errno in (errno.EINVAL, errno.EBADF)
    assert not any(link["ifname"] == "enibad0" for link in ns.ip_json("link", "show"))


def test_ipv6_addresses_without_dad_are_usable_at_once(make_netns) -> None:
    ns = make_netns("addr6")
    _veth(ns)
    pod = Address(ifname="veth0", interface=IPv6Interface("2001:db8:0:1::5/128"), nodad=True)

    def run(nl: Netlink) -> tuple[list[Address], list[Address], list[bool]]:
        nl.set_link("veth0", up=True)
        nl.add_address(pod)
        nl.add_address(pod)  # replace: no error when present
        nl.add_address(Address(ifname="veth0", interface=IPv4Interface("10.0.1.5/32")))
        listed = nl.addresses("veth0")
        with PyrouteNetlink(IPRoute()) as slow:
            cross_check = slow.addresses("veth0")
        return listed, cross_check, [nl.delete_address(pod), nl.delete_address(pod)]

    listed, cross_check, gone = ns.run(run)
    assert pod in listed and Address(ifname="veth0", interface=IPv4Interface("10.0.1.5/32")) in listed
    assert sorted(listed, key=str) == sorted(cross_check, key=str)
    assert gone == [True, False]
    # nodad: never tentative, so the pod can send from it the moment it exists (checked before deletion).
    ns.run(lambda nl: nl.add_address(pod))
    (veth0,) = ns.ip_json("-6", "addr", "show", "veth0", "scope", "global")
    (info,) = [a for a in veth0["addr_info"] if a]  # iproute2 closes the list with an empty object
    assert info["local"] == "2001:db8:0:1::5" and not info.get("tentative") and info.get("nodad")


def test_ipv6_routes_through_a_link_local_gateway(make_netns) -> None:
    ns = make_netns("route6")
    _veth(ns)
    gw = Route(dst=IPv6Network("fe80::1/128"), ifname="veth0", scope=Scope.LINK)
    default = Route(dst=IPv6Network("::/0"), ifname="veth0", gateway=IPv6Address("fe80::1"))
    host = Route(dst=IPv6Network("2001:db8::5/128"), ifname="veth0", table=7)

    def run(nl: Netlink) -> tuple[list[Route], list[Route], list[bool]]:
        nl.set_link("veth0", up=True)
        for route in (gw, default, host, host):  # replace twice: no error
            nl.replace_route(route)
        main, table7 = nl.routes(254), nl.routes(7)
        return main, table7, [nl.delete_route(host), nl.delete_route(host)]

    main, table7, deleted = ns.run(run)
    assert gw.scope is Scope.UNIVERSE  # IPv6 routes have no scope: the one given is dropped
    assert {gw, default} <= set(main) and table7 == [host] and deleted == [True, False]

    def pyroute2_routes(_: Netlink) -> list[Route]:
        with PyrouteNetlink(IPRoute()) as slow:
            return slow.routes(254)

    # The kernel adds fe80::/64 once the link's own link-local address is configured, whenever that is.
    ours = [route for route in main if route.dst != IPv6Network("fe80::/64")]
    slow = [route for route in ns.run(pyroute2_routes) if route.dst != IPv6Network("fe80::/64")]
    assert sorted(slow, key=str) == sorted(ours, key=str)
    (via,) = ns.ip_json("-6", "route", "show", "default")
    assert via["gateway"] == "fe80::1" and via["dev"] == "veth0"


def test_ipv6_rules_and_neighbours(make_netns) -> None:
    ns = make_netns("rule6")
    _veth(ns)
    pod = IPv6Network("2001:db8::5/128")
    to_pod = Rule(priority=512, table=254, dst=pod)
    marked = Rule(priority=1024, table=254, fwmark=0x80, fwmask=0x80, family=6)
    gw = Neighbour(ifname="veth0", ip=IPv6Address("fe80::1"), mac="02:00:00:00:00:0a", permanent=True)

    def run(nl: Netlink) -> tuple[list[Rule], list[Rule], list[Neighbour], int]:
        nl.set_link("veth0", up=True)
        for rule in (to_pod, to_pod, marked, Rule(priority=1024, table=254, fwmark=0x80, fwmask=0x80)):
            nl.add_rule(rule)
        nl.replace_neighbour(gw)
        listed = nl.rules()
        with PyrouteNetlink(IPRoute()) as slow:
            cross_check = slow.rules()
        return listed, cross_check, nl.neighbours("veth0"), nl.delete_rules(priority=512, dst=pod)

    listed, cross_check, neighbours, deleted = ns.run(run)
    assert to_pod in listed and marked in listed and cross_check == listed
    assert str(marked).endswith("(IPv6)")  # a rule with no address says which family it is
    assert deleted == 1
    assert gw in neighbours
    assert {r["priority"] for r in ns.ip_json("-6", "rule", "show")} == {0, 1024, 32766}
    assert {r["priority"] for r in ns.ip_json("-4", "rule", "show")} == {0, 1024, 32766, 32767}
    (entry,) = [n for n in ns.ip_json("-6", "neigh", "show", "dev", "veth0") if n["dst"] == "fe80::1"]
    assert entry["lladdr"] == gw.mac and "PERMANENT" in entry["state"]


def test_rules_of_mixed_families_are_refused() -> None:
    with pytest.raises(ValueError, match="mixes address families"):
        Rule(priority=1, table=2, src=IPv4Network("10.0.0.1/32"), dst=IPv6Network("2001:db8::1/128"))
    with pytest.raises(ValueError, match="4 or 6"):
        Rule(priority=1, table=2, family=5)


@pytest.mark.parametrize(
    "open_handle", [open_netlink, lambda: PyrouteNetlink(IPRoute())], ids=["rtnl", "pyroute2"]
)
def test_iif_rules_of_each_family_are_deleted_by_table_in_that_family_only(make_netns, open_handle) -> None:
    ns = make_netns("iif6")
    _veth(ns)
    v4 = Rule(priority=10, table=107, iif="veth0")
    v6 = Rule(priority=10, table=107, iif="veth0", family=6)

    def run(_: Netlink) -> tuple[list[Rule], int, list[Rule], int]:
        with open_handle() as nl:
            nl.add_rule(v4)
            nl.add_rule(v6)
            listed = nl.rules()
            gone6 = nl.delete_rules(priority=10, table=107, family=6)
            after = nl.rules()
            return listed, gone6, after, nl.delete_rules(priority=10, iif="veth0")

    listed, gone6, after, gone4 = ns.run(run)
    assert v4 in listed and v6 in listed
    assert gone6 == 1 and v6 not in after and v4 in after and gone4 == 1
    assert [r for r in ns.ip_json("-6", "rule", "show") if r["priority"] == 10] == []
