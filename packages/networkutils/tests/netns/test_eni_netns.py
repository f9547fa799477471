from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from vpccni.networkutils.eni import EniNetwork, LinkRetry, setup_eni_network, teardown_eni_network
from vpccni.networkutils.tables import route_table_for_eni

MAC = "0a:11:22:33:44:55"


def eni_host(make_netns) -> Any:
    host = make_netns("host")
    # A veth end stands in for the attached ENI (no dummy module here); the MAC is the ENI's.
    host.sh("ip", "link", "add", "eth1", "address", MAC, "type", "veth", "peer", "name", "eth1p")
    host.sh("ip", "link", "set", "eth1p", "up")
    host.sh("ip", "addr", "add", "10.5.5.5/24", "dev", "eth1")  # stale address to be replaced
    return host


def test_setup_on_a_link_with_the_eni_mac_gives_exact_table_and_rule(make_netns) -> None:
    host = eni_host(make_netns)
    eni = EniNetwork(
        mac=MAC.upper(),
        primary_ip=IPv4Address("10.0.97.200"),
        subnet=IPv4Network("10.0.96.0/19"),
        route_table=route_table_for_eni(1, 0),
        mtu=9001,
    )
    assert host.run(lambda nl: setup_eni_network(nl, eni)) == "eth1"
    host.run(lambda nl: setup_eni_network(nl, eni))  # again: nothing doubles

    [link] = host.ip_json("addr", "show", "dev", "eth1")
    assert link["mtu"] == 9001 and "UP" in link["flags"]
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"] == [
        ("10.0.97.200", 19)
    ]
    table = {
        (r["dst"], r.get("gateway"), r["dev"], r.get("scope"))
        for r in host.ip_json("route", "show", "table", "2")
    }
    assert table == {("default", "10.0.96.1", "eth1", None), ("10.0.96.1", None, "eth1", "link")}
    assert all(r["dst"] != "10.0.96.0/19" for r in host.ip_json("route"))
    eni_rules = [
        (r["priority"], r["src"], r["table"]) for r in host.ip_json("rule") if r["priority"] == 32765
    ]
    assert eni_rules == [(32765, "10.0.97.200", "2")]

    assert host.run(lambda nl: teardown_eni_network(nl, eni.primary_ip)) == 1
    assert all(r["priority"] != 32765 for r in host.ip_json("rule"))


def test_multi_card_table(make_netns) -> None:
    host = eni_host(make_netns)
    eni = EniNetwork(
        mac=MAC,
        primary_ip=IPv4Address("10.0.97.201"),
        subnet=IPv4Network("10.0.96.0/19"),
        route_table=route_table_for_eni(1, 1),
    )
    host.run(lambda nl: setup_eni_network(nl, eni, retry=LinkRetry(attempts=1)))
    assert {r["dst"] for r in host.ip_json("route", "show", "table", "10101")} == {"default", "10.0.96.1"}
