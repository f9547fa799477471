"""The `local` table's rule in strict branch-ENI mode (upstream's SetupHostNetwork with ENABLE_POD_ENI).

In strict mode every packet of a branch pod must leave through its branch ENI, even one to the node's own
addresses, so `from all lookup local` moves from priority 0 to 20, below the VLAN rules (10); upstream moves
the rule of the node's family only. On an IPv6 node a VLAN link must still answer and hear neighbour discovery
with EC2's router, whose packets the VLAN rule would send to the VLAN table instead of local delivery:
ICMPv6 from `fe80:ec2::1` keeps a local lookup at priority 0 (upstream's createIPv6GatewayRule).

Each new rule is added before the old one goes, so local delivery never lapses.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from .model import LOCAL_TABLE, Rule
from .netlink import Netlink
from .tables import LOCAL_RULE_PRIORITY_SGP

ICMPV6 = 58
EC2_ROUTER = IPv6Address("fe80:ec2::1")  # EC2's IPv6 gateway on every ENI (upstream's GetIPv6Gateway)
ROUTER_NDP_RULE = Rule(priority=0, table=LOCAL_TABLE, src=IPv6Network(EC2_ROUTER), ip_proto=ICMPV6)


def sync_local_rule(netlink: Netlink, *, moved_family: int | None) -> list[str]:
    """Move the local rule of `moved_family` (4, 6) to 20, or of none (leave strict mode, or teardown); the
    changes made. The other family's rule is put back at 0 only where vpccni had moved it (a host without
    IPv6 gets no IPv6 rule)."""
    existing = set(netlink.rules())
    changes: list[str] = []
    for family in (4, 6):
        kernel = Rule(priority=0, table=LOCAL_TABLE, family=family)
        moved = Rule(priority=LOCAL_RULE_PRIORITY_SGP, table=LOCAL_TABLE, family=family)
        if family == moved_family:
            changes += _ensure(netlink, existing, present=moved, absent=kernel)
        elif moved in existing:
            changes += _ensure(netlink, existing, present=kernel, absent=moved)
    if moved_family == 6:
        changes += _ensure(netlink, existing, present=ROUTER_NDP_RULE)
    elif ROUTER_NDP_RULE in existing:
        changes += _ensure(netlink, existing, absent=ROUTER_NDP_RULE)
    return changes


def _ensure(
    netlink: Netlink, existing: set[Rule], *, present: Rule | None = None, absent: Rule | None = None
) -> list[str]:
    changes = []
    if present is not None and present not in existing:
        netlink.add_rule(present)
        changes.append(f"rule {present} added")
    if absent is not None and absent in existing:
        netlink.delete_rule(absent)
        changes.append(f"rule {absent} deleted")
    return changes
