"""Secondary ENI setup and teardown (docs/design/upstream-contract.md §4)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from .model import MAIN_TABLE, Address, Link, Route, Rule, Scope, host_network
from .netlink import Netlink
from .tables import ENI_RULE_PRIORITY

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EniNetwork:
    """One non-primary ENI as ipamd knows it from IMDS/EC2."""

    mac: str
    primary_ip: IPv4Address
    subnet: IPv4Network
    route_table: int
    mtu: int = 9001
    is_trunk: bool = False

    @property
    def gateway(self) -> IPv4Address:
        """The subnet's first host (EC2's VPC router)."""
        return self.subnet.network_address + 1


@dataclass(frozen=True, kw_only=True)
class LinkRetry:
    """How long to wait for an attached ENI to show up as a link: as long as upstream's 5 tries 3 s apart,
    but looking again after `first_interval_s`, doubling up to `interval_s` (a link that shows up 0.1 s after
    the attach is used then, not 3 s later; ipamd serves a new ENI's addresses once its link is set up)."""

    attempts: int = 5
    interval_s: float = 3.0
    first_interval_s: float = 0.05
    sleep: Callable[[float], None] = time.sleep

    def delays(self) -> list[float]:
        """The waits between looks: they add up to (attempts - 1) x interval_s."""
        budget = max(0, self.attempts - 1) * self.interval_s
        out: list[float] = []
        delay = min(self.first_interval_s, self.interval_s) if self.first_interval_s > 0 else self.interval_s
        while sum(out) < budget:
            out.append(min(delay, budget - sum(out)))
            delay = min(delay * 2, self.interval_s)
        return out


DEFAULT_LINK_RETRY = LinkRetry()
ROUTE_RETRY_ATTEMPTS = 5
ROUTE_RETRY_FIRST_DELAY_S = 0.5
ROUTE_RETRY_MAX_DELAY_S = 5.0


class EniNotFoundError(LookupError):
    """No link carries the ENI's MAC."""


def find_link_by_mac(netlink: Netlink, mac: str, retry: LinkRetry = DEFAULT_LINK_RETRY) -> Link:
    """The link whose MAC is `mac`, waiting for a freshly attached ENI to appear."""
    wanted = mac.lower()
    delays = retry.delays()
    for delay in [*delays, None]:
        for link in netlink.links():
            if link.mac == wanted:
                return link
        if delay is not None:
            retry.sleep(delay)
    raise EniNotFoundError(
        f"no network interface with MAC {mac} after {sum(delays):.0f} s; check that the ENI is "
        "attached and that the OS has brought up its device"
    )


def eni_routes(eni: EniNetwork, ifname: str) -> list[Route]:
    """`<gw>/32 dev ethN scope link` and `default via <gw> dev ethN` in the ENI's table."""
    return [
        Route(dst=host_network(eni.gateway), ifname=ifname, scope=Scope.LINK, table=eni.route_table),
        Route(dst=IPv4Network("0.0.0.0/0"), ifname=ifname, gateway=eni.gateway, table=eni.route_table),
    ]


def eni_rule(eni: EniNetwork) -> Rule:
    """`from <ENI primary IP> lookup <table> prio 32765`."""
    return Rule(priority=ENI_RULE_PRIORITY, table=eni.route_table, src=host_network(eni.primary_ip))


def setup_eni_network(netlink: Netlink, eni: EniNetwork, *, retry: LinkRetry = DEFAULT_LINK_RETRY) -> str:
    """Configure the ENI's link, table and rule; returns the link name. Safe to call again."""
    if eni.route_table == MAIN_TABLE:
        raise ValueError(f"ENI {eni.mac} uses the main table: the primary ENI is set up by HostNetwork")
    link = find_link_by_mac(netlink, eni.mac, retry)
    netlink.set_link(link.name, mtu=eni.mtu, up=True)
    wanted = Address(ifname=link.name, interface=IPv4Interface(f"{eni.primary_ip}/{eni.subnet.prefixlen}"))
    for address in netlink.addresses(link.name):
        ip = address.interface.ip
        # Go's IsGlobalUnicast: everything but link-local, loopback and multicast (private ranges included).
        if address != wanted and not (ip.is_link_local or ip.is_loopback or ip.is_multicast):
            netlink.delete_address(address)
    netlink.add_address(wanted)
    for route in eni_routes(eni, link.name):
        netlink.delete_route(route)
        _replace_with_backoff(netlink, route, retry.sleep)
    # The kernel's connected route would send subnet traffic out of this ENI from main; main keeps eth0 only.
    subnet_route = Route(dst=eni.subnet, ifname=link.name, scope=Scope.LINK, table=MAIN_TABLE)
    netlink.delete_route(subnet_route)
    if not eni.is_trunk and eni_rule(eni) not in netlink.rules():
        netlink.add_rule(eni_rule(eni))
    log.info("ENI %s (%s) set up with table %d", eni.mac, link.name, eni.route_table)
    return link.name


def existing_eni_table(netlink: Netlink, primary_ip: IPv4Address) -> int | None:
    """The table of an existing `from <ENI primary IP> prio 32765` rule, if any.

    An AMI or an older CNI may have numbered a multi-card ENI's table differently; reusing it keeps the pods
    already routed through it working.
    """
    src = host_network(primary_ip)
    for rule in netlink.rules():
        if rule.priority == ENI_RULE_PRIORITY and rule.src == src:
            return rule.table
    return None


def _replace_with_backoff(netlink: Netlink, route: Route, sleep: Callable[[float], None]) -> None:
    """Upstream retries the ENI routes 5 times, 0.5 s doubling to 5 s: a fresh link may not take them yet."""
    delay = ROUTE_RETRY_FIRST_DELAY_S
    for attempt in range(1, ROUTE_RETRY_ATTEMPTS + 1):
        try:
            netlink.replace_route(route)
            return
        except Exception as exc:  # pyroute2's NetlinkError is not an OSError
            if attempt == ROUTE_RETRY_ATTEMPTS:
                raise RuntimeError(
                    f"cannot add route {route} after {attempt} attempts: {exc}; "
                    f"check that {route.ifname} is up"
                ) from exc
            log.warning("route %s failed (%s), retrying in %.1fs", route, exc, delay)
            sleep(delay)
            delay = min(delay * 2, ROUTE_RETRY_MAX_DELAY_S)


def teardown_eni_network(netlink: Netlink, primary_ip: IPv4Address) -> int:
    """Delete every rule `from <ENI primary IP>`; returns how many went. The link leaves with the detach."""
    src = host_network(primary_ip)
    removed = 0
    for rule in netlink.rules():
        if rule.src == src and netlink.delete_rule(rule):
            removed += 1
    return removed
