"""Which host interface leads to each pod address: the kernel's own answer, from the main table's /32 routes
ipamd installs (`<pod IP> dev <host veth> scope link`).

The agent names a pod's host veth as upstream does (`eni` + sha1("<namespace>.<pod>")[:11]), which is what
ipamd uses unless that name is held by another live attachment of the pod (a sandbox recreated while the old
one lives); then ipamd picks a name of the attachment's own, and only the route tells it.
"""

from __future__ import annotations

from typing import Protocol

from vpccni.networkutils.model import MAIN_TABLE
from vpccni.networkutils.netlink import open_netlink


class PodInterfaces(Protocol):
    def by_address(self) -> dict[str, str]:
        """Pod address -> the host interface its /32 route goes out of."""
        ...


class RouteInterfaces:
    """`PodInterfaces` from an rtnetlink route dump of the current network namespace."""

    def by_address(self) -> dict[str, str]:
        with open_netlink() as netlink:
            routes = netlink.routes(MAIN_TABLE)
        return {
            str(r.dst.network_address): r.ifname
            for r in routes
            if r.dst.prefixlen == 32 and r.gateway is None and r.ifname
        }
