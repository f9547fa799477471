"""Security groups on real packets: one nftables table in the VPC namespace, rendered from the EC2 state.

EC2 filters at each ENI, statefully: a packet leaving an ENI needs an egress rule of one of its groups, a
packet reaching an ENI an ingress rule; replies of an allowed connection always pass (conntrack). Here the
ENI's VPC-side port (its veth, or a branch ENI's VLAN sub-port) stands for the ENI: `iifname` selects the
egress chain of the ENI a packet comes from, `oifname` the ingress chain of the ENI it goes to.

The table is `inet`, so one chain per port judges IPv4 and IPv6 alike, each rule in its own family: an
`IpRanges` rule matches IPv4 packets only (0.0.0.0/0 all of them), an `Ipv6Ranges` rule IPv6 packets only
(::/0 all of them), and a rule that references a group matches the addresses of that group's ENIs in both
families (a named set per referenced group and family). ICMP rules match ICMPv4, ICMPv6 (58) rules ICMPv6.

What EC2 never filters stays unfiltered: neighbour discovery and any other link-local traffic with its router
(fe80:ec2::1 on every ENI link) ends at the router, so it meets the input hook, never this forward chain; the
kernel never forwards a link-local packet.

As on EC2, changing rules does not cut a connection already tracked: its packets pass as established until
conntrack forgets it. Traffic that stays inside a node (two pods on the same ENI) never reaches the VPC, as
on EC2; branch-ENI pods always do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vpccni.testbed.ec2.security import SecurityState, SgRule

from .namespaces import exec_in_netns
from .srccheck import counted_packets

log = logging.getLogger(__name__)

TABLE = "vtb_sg"
ALL_PORTS = (0, 65535)
_FAMILY = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}  # the nft address keyword and set type
_ICMP = {"icmp": ("icmp", "icmp"), "icmpv6": ("ipv6-icmp", "icmpv6")}  # protocol: (l4proto, header)
_ONLY_IN = {"icmp": 4, "icmpv6": 6}  # protocols that exist in one family only


def render_security(*, ports: Mapping[str, str], state: SecurityState) -> str:
    """The nft script that (re)creates the table; `ports` maps each VPC-side link to its ENI id."""
    filtered = {link: eni for link, eni in sorted(ports.items()) if eni in state.eni_groups}
    chains: list[str] = []
    referenced: set[str] = set()
    for link, eni in filtered.items():
        groups = [state.groups[g] for g in state.eni_groups[eni] if g in state.groups]
        for direction, rules, peer in (
            ("out", [r for g in groups for r in g.egress], "daddr"),
            ("in", [r for g in groups for r in g.ingress], "saddr"),
        ):
            matches = list(dict.fromkeys(m for rule in rules for m in _matches(rule, peer)))
            referenced.update(r.group_id for r in rules if r.group_id)
            chains.append(f"  chain {direction}_{link} {{")
            chains += [f"    {m} return" for m in matches]
            chains += ["    counter drop", "  }"]
    lines = [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    for group_id in sorted(referenced):
        for version, (_, addr_type) in _FAMILY.items():
            members = state.members(group_id, version=version)
            lines += [f"  set {_set(group_id, version)} {{", f"    type {addr_type}; flags interval;"]
            if members:
                lines.append(f"    elements = {{ {', '.join(str(m) for m in members)} }}")
            lines.append("  }")
    lines += [
        "  chain forward {",
        # After the source check (prerouting) and the internet rule (forward, priority 0).
        "    type filter hook forward priority 10; policy accept;",
        "    ct state established,related accept",
    ]
    if filtered:
        for key, direction in (("iifname", "out"), ("oifname", "in")):
            vmap = ", ".join(f'"{link}" : jump {direction}_{link}' for link in filtered)
            lines.append(f"    {key} vmap {{ {vmap} }}")
    lines += ["  }", *chains, "}"]
    return "\n".join(lines) + "\n"


def _set(group_id: str, version: int) -> str:
    return ("g_" if version == 4 else "g6_") + group_id.replace("-", "_")


def _matches(rule: SgRule, peer: str) -> list[str]:
    """The nft match of a rule, one per family it applies to (a group reference: both, unless its protocol
    exists in one family only)."""
    versions: list[int]
    if rule.cidr is not None:
        versions = [rule.cidr.version]
    else:
        versions = [v for v in _FAMILY if _ONLY_IN.get(rule.protocol, v) == v]
    found = []
    for version in versions:
        keyword = _FAMILY[version][0]
        if rule.cidr is None:
            address = f"{keyword} {peer} @{_set(str(rule.group_id), version)}"
        elif rule.cidr.prefixlen:
            address = f"{keyword} {peer} {rule.cidr}"
        else:  # 0.0.0.0/0 or ::/0: every packet of that family
            address = f"meta nfproto {'ipv4' if version == 4 else 'ipv6'}"
        found.append(" ".join([address, *_protocol(rule)]))
    return found


def _protocol(rule: SgRule) -> list[str]:
    if rule.protocol == "-1":
        return []
    if rule.protocol in ("tcp", "udp"):
        low, high = rule.from_port, rule.to_port
        if low is None or high is None or (low, high) == ALL_PORTS or low < 0:
            return [f"meta l4proto {rule.protocol}"]
        return [f"{rule.protocol} dport {low}" if low == high else f"{rule.protocol} dport {low}-{high}"]
    if rule.protocol in _ICMP:
        l4proto, header = _ICMP[rule.protocol]
        parts = [f"meta l4proto {l4proto}"]
        if rule.from_port is not None and rule.from_port >= 0:
            parts.append(f"{header} type {rule.from_port}")
            if rule.to_port is not None and rule.to_port >= 0:
                parts.append(f"{header} code {rule.to_port}")
        return parts
    return [f"meta l4proto {rule.protocol}"]


class SecurityGroups:
    """Keeps the VPC namespace's security-group table equal to the EC2 state (re-applied only on change)."""

    def __init__(self, *, netns: str) -> None:
        self._netns = netns
        self._applied = ""

    def apply(self, *, ports: Mapping[str, str], state: SecurityState) -> None:
        script = render_security(ports=ports, state=state)
        if script == self._applied:
            return
        exec_in_netns(self._netns, ["nft", "-f", "-"], stdin=script)
        self._applied = script

    def reset(self) -> None:
        self._applied = ""

    def dropped_packets(self, link: str, direction: str) -> int:
        """Packets dropped leaving (`out`) or reaching (`in`) the ENI behind `link` since its chain was last
        rewritten."""
        return counted_packets(self._netns, TABLE, f"{direction}_{link}", family="inet")
