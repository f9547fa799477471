"""The raw-socket link and rule dumps report exactly what pyroute2's decoding reports."""

from __future__ import annotations

from ipaddress import IPv4Network

from pyroute2 import IPRoute
from vpccni.networkutils.model import Rule
from vpccni.networkutils.netlink import PyrouteNetlink, open_netlink


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
    assert len(rules) == 306
    assert Rule(priority=1024, table=254, fwmark=0x80, fwmask=0x80) in rules
    assert Rule(priority=512, table=300, dst=IPv4Network("10.1.0.0/16")) in rules


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
