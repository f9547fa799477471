"""The host's per-pod policy rules read and removed through networkutils' netlink seam (for GC)."""

from __future__ import annotations

from vpccni.networkutils.egress import V4_RANGE, V6_RANGE
from vpccni.networkutils.model import IPAddress, Rule
from vpccni.networkutils.netlink import Netlink
from vpccni.networkutils.tables import FROM_POD_RULE_PRIORITY, TO_POD_RULE_PRIORITY


def _pod_ip(rule: Rule) -> IPAddress | None:
    """The pod address a to-pod (512) or from-pod (1536) rule is about; None for any other rule."""
    if rule.priority == TO_POD_RULE_PRIORITY and rule.src is None:
        net = rule.dst
    elif rule.priority == FROM_POD_RULE_PRIORITY:
        net = rule.src
    else:
        return None
    return net.network_address if net is not None and net.prefixlen == net.max_prefixlen else None


class NetlinkHostPodRules:
    """``to IP/32 lookup main prio 512`` and ``from IP/32 lookup T prio 1536`` (/128 for IPv6 pods): the
    rules pod wiring adds."""

    def __init__(self, host: Netlink) -> None:
        self._host = host

    def pod_rule_addresses(self) -> set[IPAddress]:
        """Pod addresses with rules; egress-cni's (169.254.172.0/22, fd00::ac:00/118) are not pods' own and
        live as long as their reservation."""
        found = set()
        for rule in self._host.rules():
            ip = _pod_ip(rule)
            if ip is not None and ip not in (V4_RANGE if ip.version == 4 else V6_RANGE):
                found.add(ip)
        return found

    def remove_pod_rules(self, ip: IPAddress) -> int:
        removed = 0
        for rule in self._host.rules():
            if _pod_ip(rule) == ip and self._host.delete_rule(rule):
                removed += 1
        return removed
