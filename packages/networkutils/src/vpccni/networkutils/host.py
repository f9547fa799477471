"""Host network setup (docs/design/upstream-contract.md §4): primary ENI, rules 1024/1535, SNAT and connmark.

`apply` is declarative: it reads what exists, changes only what differs (one atomic iptables-restore per
table, one nft transaction), and reports what it changed, so it can run at start and again whenever the VPC
CIDRs change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .config import ConnmarkBackend, HostNetworkConfig
from .eni import DEFAULT_LINK_RETRY, LinkRetry, find_link_by_mac
from .iptables import DesiredTable, Iptables, IptablesMode, parse_save, plan_restore
from .localrule import sync_local_rule
from .model import MAIN_TABLE, Rule
from .netlink import Netlink
from .nft import NFT_FAMILY, NFT_TABLE, Nft, connmark_table_body, normalize_listing
from .snat import OWNERSHIP, desired_tables
from .tables import CONNMARK_RULE_PRIORITY, EXTERNAL_SERVICE_RULE_PRIORITY

log = logging.getLogger(__name__)

IPTABLES_TABLES = ("nat", "mangle")


@dataclass(frozen=True, kw_only=True)
class HostNetworkResult:
    """What one `apply` found and changed (empty `changes` = already converged)."""

    primary_ifname: str
    backend: ConnmarkBackend
    changes: tuple[str, ...]


def _sysctls(config: HostNetworkConfig, primary: str) -> list[tuple[str, str]]:
    """What the node needs: loose rp_filter on the primary interface (NodePort traffic DNATed to a pod on a
    secondary ENI fails the strict check) and forwarding; in IPv6 mode IPv6 on, forwarding it, and router
    advertisements still accepted on the primary interface (accept_ra=2: forwarding alone would stop them,
    and the node's IPv6 default route comes from them) — set before forwarding for no gap. The same for IPv6
    egress of IPv4 pods."""
    wanted = [(f"net/ipv4/conf/{primary}/rp_filter", "2"), ("net/ipv4/ip_forward", "1")]
    if config.ipv6 or config.v6_egress:
        wanted += [
            ("net/ipv6/conf/all/disable_ipv6", "0"),
            (f"net/ipv6/conf/{primary}/accept_ra", "2"),
            ("net/ipv6/conf/all/forwarding", "1"),
        ]
    return wanted


class HostNetwork:
    """Applies and removes the node-wide network state. Call from a thread in the host's namespace."""

    def __init__(
        self, *, netlink: Netlink, iptables: Iptables, nft: Nft, link_retry: LinkRetry = DEFAULT_LINK_RETRY
    ) -> None:
        self._netlink = netlink
        self._iptables = iptables
        self._nft = nft
        self._link_retry = link_retry

    def backend_for(self, config: HostNetworkConfig) -> ConnmarkBackend:
        """The configured connmark backend, else nftables when the host's iptables is nf_tables."""
        if config.connmark_backend is not None:
            return config.connmark_backend
        nft_host = self._iptables.mode() is IptablesMode.NFT
        return ConnmarkBackend.NFTABLES if nft_host else ConnmarkBackend.IPTABLES

    def apply(self, config: HostNetworkConfig) -> HostNetworkResult:
        """Converge the host to `config`; idempotent."""
        changes: list[str] = []
        link = find_link_by_mac(self._netlink, config.primary_mac, self._link_retry)
        if link.mtu != config.mtu:
            self._netlink.set_link(link.name, mtu=config.mtu)
            changes.append(f"mtu {config.mtu} on {link.name}")
        changes += self._sync_rules(self._desired_rules(config))
        moved = (6 if config.ipv6 else 4) if config.local_rule_after_vlan_rules else None
        changes += sync_local_rule(self._netlink, moved_family=moved)
        for key, value in _sysctls(config, link.name):
            if self._netlink.read_sysctl(key) != value:
                self._netlink.write_sysctl(key, value)
                changes.append(f"sysctl {key}={value}")
        backend = self.backend_for(config)
        for desired in desired_tables(config, backend, link.name):
            existing = parse_save(self._iptables.save(desired.name))
            plan = plan_restore(desired, existing, OWNERSHIP)
            if plan is not None:
                self._iptables.restore(plan)
                changes.append(f"iptables {desired.name} updated")
        changes += self._sync_nft(config, backend)
        for change in changes:
            log.info("host network: %s", change)
        return HostNetworkResult(primary_ifname=link.name, backend=backend, changes=tuple(changes))

    def teardown(self) -> list[str]:
        """Remove every rule, chain and table vpccni owns on the host (any config, any older layout)."""
        changes = self._sync_rules([]) + sync_local_rule(self._netlink, moved_family=None)
        for table in IPTABLES_TABLES:
            existing = parse_save(self._iptables.save(table))
            plan = plan_restore(DesiredTable(name=table), existing, OWNERSHIP)
            if plan is not None:
                self._iptables.restore(plan)
                changes.append(f"iptables {table} cleaned")
        if self._nft.delete_table(NFT_FAMILY, NFT_TABLE):
            changes.append(f"nft table {NFT_FAMILY} {NFT_TABLE} deleted")
        return changes

    @staticmethod
    def _desired_rules(config: HostNetworkConfig) -> list[Rule]:
        rules = [
            Rule(priority=EXTERNAL_SERVICE_RULE_PRIORITY, table=MAIN_TABLE, dst=cidr)
            for cidr in config.external_service_cidrs
        ]
        if config.connmark_rule_wanted:
            mark = config.connmark
            family = 6 if config.ipv6 else 4  # upstream's ensureMainENIMarkedTrafficRule(ipFamily)
            marked = Rule(
                priority=CONNMARK_RULE_PRIORITY, table=MAIN_TABLE, fwmark=mark, fwmask=mark, family=family
            )
            rules.append(marked)
        return rules

    def _sync_rules(self, desired: list[Rule]) -> list[str]:
        """Make the rules at priorities 1024 and 1535 exactly `desired`."""
        changes = []
        managed = {CONNMARK_RULE_PRIORITY, EXTERNAL_SERVICE_RULE_PRIORITY}
        existing = [rule for rule in self._netlink.rules() if rule.priority in managed]
        for rule in existing:
            if rule not in desired:
                self._netlink.delete_rule(rule)
                changes.append(f"rule {rule} deleted")
        for rule in desired:
            if rule not in existing:
                self._netlink.add_rule(rule)
                changes.append(f"rule {rule} added")
        return changes

    def _sync_nft(self, config: HostNetworkConfig, backend: ConnmarkBackend) -> list[str]:
        wanted = backend is ConnmarkBackend.NFTABLES and config.snat_wanted
        if not wanted:
            # Also removes the other backend's leftovers after a switch to iptables.
            deleted = self._nft.delete_table(NFT_FAMILY, NFT_TABLE)
            return [f"nft table {NFT_FAMILY} {NFT_TABLE} deleted"] if deleted else []
        body = connmark_table_body(config)
        existing = self._nft.list_table(NFT_FAMILY, NFT_TABLE)
        if existing is not None and normalize_listing(existing) == normalize_listing(body):
            return []
        self._nft.replace_table(NFT_FAMILY, NFT_TABLE, body)
        return [f"nft table {NFT_FAMILY} {NFT_TABLE} written"]
