"""Which host interface leads to each pod address: the kernel's own answer, from the main table's /32 routes
ipamd installs (`<pod IP> dev <host veth> scope link`).

The agent names a pod's host veth as upstream does (`eni` + sha1("<namespace>.<pod>")[:11]), which is what
ipamd uses unless that name is held by another live attachment of the pod (a sandbox recreated while the old
one lives); then ipamd picks a name of the attachment's own, and only the route tells it.

Branch-ENI pods of security groups for pods in strict mode have no main-table route: their veth (`vlan` +
hash) is routed in the VLAN's table, which a priority-10 `iif <veth>` rule names; those tables are read too.
"""

from __future__ import annotations

from typing import Protocol

from vpccni.networkutils.model import MAIN_TABLE, Route
from vpccni.networkutils.netlink import open_netlink
from vpccni.networkutils.tables import VLAN_RULE_PRIORITY


class PodInterfaces(Protocol):
    def by_address(self) -> dict[str, str]:
        """Pod address -> the host interface its /32 route goes out of."""
        ...


class RouteInterfaces:
    """`PodInterfaces` from an rtnetlink route dump of the current network namespace."""

    def by_address(self) -> dict[str, str]:
        with open_netlink() as netlink:
            found = _pod_routes(netlink.routes(MAIN_TABLE))
            branch_veths = {
                r.iif: r.table
                for r in netlink.rules()
                if r.priority == VLAN_RULE_PRIORITY and r.iif and not r.iif.startswith("vlan.eth.")
            }
            for veth, table in branch_veths.items():
                for address, ifname in _pod_routes(netlink.routes(table)).items():
                    if ifname == veth:
                        found.setdefault(address, ifname)
        return found


def _pod_routes(routes: list[Route]) -> dict[str, str]:
    return {
        str(r.dst.network_address): r.ifname
        for r in routes
        if r.dst.prefixlen == 32 and r.gateway is None and r.ifname
    }
