"""The netlink seam: a `Netlink` protocol for one network namespace and `open_netlink()`.

Each method equals one `ip` command (named in its docstring). Deleting something that is not there is not an
error: teardown must be idempotent. `open_netlink()` returns the raw-socket adapter (`rtnl_netlink`);
`pyroute_netlink.PyrouteNetlink` does the same through pyroute2 (several times slower per request) and serves
as an independent cross-check in the netns tests. Nothing here imports pyroute2: ipamd never uses it, and
importing it costs ~10 MiB of resident memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .model import Address, IPNetwork, Link, Neighbour, Route, Rule

if TYPE_CHECKING:
    from .rtnl_netlink import RtnlNetlink


class Netlink(Protocol):
    """Netlink operations in one network namespace (the one the handle was opened in)."""

    def links(self) -> list[Link]:
        """`ip link show`."""
        ...

    def link(self, name: str) -> Link | None:
        """`ip link show dev NAME` (None if absent)."""
        ...

    def add_veth(self, *, name: str, mac: str, mtu: int, peer_name: str, peer_netns_fd: int) -> None:
        """`ip link add NAME address MAC mtu MTU type veth peer name PEER netns FD mtu MTU`."""
        ...

    def add_vlan(self, *, name: str, parent: str, vlan_id: int, mac: str, mtu: int | None = None) -> None:
        """`ip link add link PARENT name NAME address MAC [mtu MTU] type vlan id VLAN_ID` (raises
        `LookupError` when PARENT is missing)."""
        ...

    def delete_link(self, name: str) -> bool:
        """`ip link del NAME`; False if it was not there."""
        ...

    def set_link(self, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        """`ip link set NAME [mtu MTU] [up|down]`."""
        ...

    def addresses(self, ifname: str) -> list[Address]:
        """`ip addr show dev IFNAME` (IPv4 and IPv6)."""
        ...

    def add_address(self, address: Address) -> None:
        """`ip addr replace ADDR dev IFNAME [nodad]`."""
        ...

    def delete_address(self, address: Address) -> bool:
        """`ip addr del ADDR dev IFNAME`."""
        ...

    def routes(self, table: int) -> list[Route]:
        """`ip route show table TABLE` and `ip -6 route show table TABLE` (unicast routes)."""
        ...

    def replace_route(self, route: Route) -> None:
        """`ip route replace ...`."""
        ...

    def delete_route(self, route: Route) -> bool:
        """`ip route del ...`; False if it was not there."""
        ...

    def rules(self) -> list[Rule]:
        """`ip rule show` and `ip -6 rule show`."""
        ...

    def add_rule(self, rule: Rule) -> None:
        """`ip rule add ...` (an existing identical rule is not an error)."""
        ...

    def delete_rule(self, rule: Rule) -> bool:
        """`ip rule del ...`; False if it was not there."""
        ...

    def delete_rules(
        self,
        *,
        priority: int,
        src: IPNetwork | None = None,
        dst: IPNetwork | None = None,
        table: int | None = None,
        iif: str | None = None,
        family: int = 4,
    ) -> int:
        """`ip [-6] rule del prio P [from SRC] [to DST] [iif IIF] [table T]` until none is left; returns how
        many went. The family follows SRC/DST when given, else `family` (4 or 6).

        Like the kernel, a selector left out matches anything (no dump of every rule needed); without
        `table`, rules of every table. At least one selector besides the priority is required
        (`check_rule_selector`).
        """
        ...

    def neighbours(self, ifname: str) -> list[Neighbour]:
        """`ip neigh show dev IFNAME` (IPv4 and IPv6)."""
        ...

    def replace_neighbour(self, neighbour: Neighbour) -> None:
        """`ip neigh replace IP lladdr MAC dev IFNAME nud permanent`."""
        ...

    def write_sysctl(self, key: str, value: str) -> bool:
        """`sysctl -w KEY=VALUE` for this namespace (key like `net/ipv4/ip_forward`); False on ENOENT."""
        ...

    def read_sysctl(self, key: str) -> str | None:
        """`sysctl KEY` for this namespace; None if it does not exist."""
        ...

    def close(self) -> None:
        """Release the handle."""
        ...


def check_rule_selector(
    *, src: IPNetwork | None, dst: IPNetwork | None, table: int | None, iif: str | None, family: int = 4
) -> int:
    """The IP version `delete_rules` works on (SRC's or DST's, else `family`); it refuses a priority alone,
    which would delete every rule of the priority."""
    if src is None and dst is None and not table and iif is None:
        raise ValueError(
            "delete_rules needs a source, a destination, a table or an incoming interface: it would "
            "delete every rule of the priority"
        )
    versions = {net.version for net in (src, dst) if net is not None}
    if len(versions) > 1:
        raise ValueError(f"delete_rules mixes address families: from {src} to {dst}")
    return versions.pop() if versions else family


def open_netlink() -> RtnlNetlink:
    """Open a netlink handle (one raw rtnetlink socket) in the calling thread's current network namespace."""
    from .rtnl_netlink import RtnlNetlink  # it imports the model this module re-exports

    return RtnlNetlink.open()
