"""The node's rules for egress-cni: SNAT of the pods' egress addresses, and no forwarding to them.

IPv4 egress of IPv6 pods (169.254.172.0/22) is translated to the node's IPv4 address, IPv6 egress of IPv4
pods (fd00::ac:00/118, ENABLE_V6_EGRESS) to the node's IPv6 address, as upstream's egress-cni does.
Upstream makes a chain per pod (`CNI-E4-<hash>`) and a POSTROUTING jump per pod address at every ADD; here
one node-wide chain covers the whole range, written once at start, so an ADD runs no iptables at all. The
per-pod chains an upstream egress-cni left behind are removed once the node-wide one is in place (they do
the same SNAT).

New connections forwarded *to* an egress range are rejected (upstream's "Block Node Local Pod access" rule at
the head of FORWARD): those addresses exist on every node and are no way into a pod.

Both iptables flavours: the rules are the `iptables-save` text both print; `ip6tables` for IPv6.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from .commands import CommandError
from .config import SnatRandomization
from .iptables import DesiredTable, Iptables, Ownership, comment_of, parse_save, plan_restore
from .model import IPAddress, IPNetwork

log = logging.getLogger(__name__)

V4_RANGE = IPv4Network("169.254.172.0/22")
V6_RANGE = IPv6Network("fd00::ac:0/118")
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
COMMENT_EGRESS = "AWS, egress"
COMMENT_EGRESS_JUMP = "AWS egress SNAT"
COMMENT_BLOCK = {4: "Block Node Local Pod access via IPv4", 6: "Block Node Local Pod access via IPv6"}
REJECT_WITH = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}
_RANDOM_FLAG = {SnatRandomization.PRNG: " --random-fully", SnatRandomization.HASHRANDOM: " --random"}
TABLES = ("nat", "filter")

_LEGACY_CHAIN = re.compile(r"^CNI-E[46]-[0-9a-f]{21}$")  # upstream's per-pod chain (28 characters)
_JUMP = re.compile(r"-j (AWS-EGRESS-[46]|CNI-E[46]-[0-9a-f]{21})(\s|$)")
_OUR_COMMENTS = frozenset({COMMENT_EGRESS, COMMENT_EGRESS_JUMP, *COMMENT_BLOCK.values()})

OWNERSHIP = Ownership(
    is_our_chain=lambda chain: chain in ("AWS-EGRESS-4", "AWS-EGRESS-6") or bool(_LEGACY_CHAIN.match(chain)),
    is_our_rule=lambda rule: comment_of(rule) in _OUR_COMMENTS or bool(_JUMP.search(rule)),
)


def chain_name(family: int) -> str:
    return f"AWS-EGRESS-{family}"


@dataclass(frozen=True, kw_only=True)
class EgressRules:
    """What one family's tables hold. `node_ip` None: no SNAT (egress of that family is off)."""

    family: int
    subnet: IPNetwork
    node_ip: IPAddress | None = None
    block_forwarding: bool = True
    randomize: SnatRandomization = SnatRandomization.PRNG

    def __post_init__(self) -> None:
        if self.subnet.version != self.family or (self.node_ip and self.node_ip.version != self.family):
            raise ValueError(f"egress rules of family {self.family} need a subnet and node IP of that family")


def desired_tables(rules: EgressRules) -> list[DesiredTable]:
    """nat (the SNAT chain and its POSTROUTING jump) and filter (the FORWARD reject), as iptables-save
    prints them."""
    family, subnet = rules.family, rules.subnet
    nat = DesiredTable(name="nat")
    if rules.node_ip is not None:
        chain = chain_name(family)
        snat = [
            f'-d {MULTICAST[family]} -m comment --comment "{COMMENT_EGRESS}" -j ACCEPT',
            f'-m comment --comment "{COMMENT_EGRESS}" -j SNAT --to-source {rules.node_ip}'
            + _RANDOM_FLAG.get(rules.randomize, ""),
        ]
        jump = f'-s {subnet} -m comment --comment "{COMMENT_EGRESS_JUMP}" -j {chain}'
        nat = DesiredTable(name="nat", chains={chain: snat}, builtin={"POSTROUTING": [jump]})
    filter_ = DesiredTable(name="filter")
    if rules.block_forwarding:
        block = (
            f'-d {subnet} -m conntrack --ctstate NEW -m comment --comment "{COMMENT_BLOCK[family]}" '
            f"-j REJECT --reject-with {REJECT_WITH[family]}"
        )
        filter_ = DesiredTable(name="filter", head={"FORWARD": [block]})
    return [nat, filter_]


class EgressHostRules:
    """Converges iptables (IPv4) and ip6tables (IPv6) to the wanted egress rules; idempotent."""

    def __init__(self, *, iptables: Iptables, ip6tables: Iptables | None) -> None:
        """`ip6tables` None: IPv6 is neither wanted nor cleaned up (no IPv6 egress configured)."""
        self._tools = {4: iptables, 6: ip6tables}

    def apply(self, wanted: list[EgressRules]) -> list[str]:
        """Write `wanted` (at most one per family) and remove egress rules of any family not in it.

        A family with nothing wanted is cleaned up best effort: a node without ip6tables has nothing of ours
        there."""
        by_family = {rules.family: rules for rules in wanted}
        changes: list[str] = []
        for family, tool in self._tools.items():
            rules = by_family.get(family)
            if tool is None:
                if rules is not None:
                    raise ValueError(f"IPv{family} egress rules wanted without an ip6tables to write them")
                continue
            desired = desired_tables(rules) if rules else [DesiredTable(name=table) for table in TABLES]
            try:
                changes += self._converge(tool, desired, family)
            except CommandError:
                if rules is not None:
                    raise
                log.debug("no IPv%d egress rules to clean up: %s unavailable", family, "ip6tables")
        for change in changes:
            log.info("egress rules: %s", change)
        return changes

    def teardown(self) -> list[str]:
        return self.apply([])

    @staticmethod
    def _converge(tool: Iptables, desired: list[DesiredTable], family: int) -> list[str]:
        changes = []
        for table in desired:
            plan = plan_restore(table, parse_save(tool.save(table.name)), OWNERSHIP)
            if plan is not None:
                tool.restore(plan)
                changes.append(f"ip{'6' if family == 6 else ''}tables {table.name} updated")
        return changes
