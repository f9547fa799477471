"""Which host interface leads to each pod address, read from a real node namespace: the main table's /32
routes, and the VLAN tables of branch-ENI pods in strict mode (named by their priority-10 `iif` rules)."""

from __future__ import annotations

import os
import uuid

import pytest
from vpccni.netpol.agent.interfaces import RouteInterfaces
from vpccni.testbed.datapath import namespaces as ns

pytestmark = pytest.mark.netns


def test_main_table_pods_and_strict_branch_pods_are_found_by_their_routes() -> None:
    if os.geteuid() != 0:
        pytest.skip("the netns tier needs root")
    name = f"vpccni-np-if-{uuid.uuid4().hex[:8]}"
    ns.create_netns(name)
    try:
        for argv in (
            ["ip", "link", "add", "eni0123456789a", "type", "veth", "peer", "name", "peer0"],
            ["ip", "link", "add", "vlan0123456789", "type", "veth", "peer", "name", "peer1"],
            ["ip", "link", "add", "vlan.eth.7", "type", "veth", "peer", "name", "peer2"],
            ["ip", "link", "set", "eni0123456789a", "up"],
            ["ip", "link", "set", "vlan0123456789", "up"],
            ["ip", "link", "set", "vlan.eth.7", "up"],
            ["ip", "route", "add", "10.0.1.10/32", "dev", "eni0123456789a", "scope", "link"],
            # a branch pod in strict mode: its route only in the VLAN's table, and the table's rules
            ["ip", "route", "add", "10.0.16.40/32", "dev", "vlan0123456789", "scope", "link", "table", "107"],
            ["ip", "route", "add", "10.0.16.1/32", "dev", "vlan.eth.7", "scope", "link", "table", "107"],
            ["ip", "rule", "add", "iif", "vlan0123456789", "lookup", "107", "prio", "10"],
            ["ip", "rule", "add", "iif", "vlan.eth.7", "lookup", "107", "prio", "10"],
            # a table no pod rule names is not read
            ["ip", "route", "add", "10.9.9.9/32", "dev", "eni0123456789a", "scope", "link", "table", "300"],
        ):
            ns.exec_in_netns(name, argv)
        found = ns.in_netns(name, lambda: RouteInterfaces().by_address())
        assert found == {"10.0.1.10": "eni0123456789a", "10.0.16.40": "vlan0123456789"}
    finally:
        ns.delete_netns(name)
