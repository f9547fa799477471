"""The iptables rules vpccni wants (docs/design/upstream-contract.md §4), in `iptables-save` text form.

Chain names and comments are a contract: support tools and upgrade cleanup match on them.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network

from .config import ConnmarkBackend, HostNetworkConfig, SnatRandomization
from .iptables import DesiredTable, Ownership, comment_of

SNAT_CHAIN = "AWS-SNAT-CHAIN-0"
CONNMARK_CHAIN = "AWS-CONNMARK-CHAIN-0"

COMMENT_SNAT_JUMP = "AWS SNAT CHAIN"
COMMENT_SNAT_EXCLUSION = "AWS SNAT CHAIN EXCLUSION"
COMMENT_SNAT = "AWS, SNAT"
COMMENT_PRIMARY_ENI = "AWS, primary ENI"
COMMENT_OUTBOUND = "AWS, outbound connections"
COMMENT_CONNMARK_RETURN = "AWS CONNMARK CHAIN"
COMMENT_CONNMARK = "AWS, CONNMARK"

OUR_COMMENTS = frozenset(
    {
        COMMENT_SNAT_JUMP,
        COMMENT_SNAT_EXCLUSION,
        COMMENT_SNAT,
        COMMENT_PRIMARY_ENI,
        COMMENT_OUTBOUND,
        COMMENT_CONNMARK_RETURN,
        COMMENT_CONNMARK,
    }
)
_OUR_CHAIN = re.compile(r"^AWS-(SNAT|CONNMARK)-CHAIN-\d+$")
_JUMP_TO_OURS = re.compile(r"-j AWS-(SNAT|CONNMARK)-CHAIN-\d+(\s|$)")

OWNERSHIP = Ownership(
    is_our_chain=lambda chain: bool(_OUR_CHAIN.match(chain)),
    # Old layouts (e.g. the `-m state --state NEW` jump) are ours too, found by their jump target.
    is_our_rule=lambda rule: comment_of(rule) in OUR_COMMENTS or bool(_JUMP_TO_OURS.search(rule)),
)

_RANDOM_FLAG = {SnatRandomization.PRNG: " --random-fully", SnatRandomization.HASHRANDOM: " --random"}


def _dst(cidr: IPv4Network) -> str:
    return "" if cidr.prefixlen == 0 else f"-d {cidr} "


def _c(comment: str) -> str:
    return f'-m comment --comment "{comment}"'


def nat_table(config: HostNetworkConfig, backend: ConnmarkBackend) -> DesiredTable:
    """nat: the SNAT chain (unless external SNAT) and, with the iptables backend, the connmark chain."""
    if not config.snat_wanted:
        return DesiredTable(name="nat")
    mark = f"{config.connmark:#x}"
    snat = [f"{_dst(cidr)}{_c(COMMENT_SNAT_JUMP)} -j RETURN" for cidr in config.vpc_cidrs]
    snat += [f"{_dst(cidr)}{_c(COMMENT_SNAT_EXCLUSION)} -j RETURN" for cidr in config.exclude_snat_cidrs]
    snat.append(
        f"! -o vlan+ {_c(COMMENT_SNAT)} -m addrtype ! --dst-type LOCAL -j SNAT --to-source {config.node_ip}"
        + _RANDOM_FLAG.get(config.randomize_snat, "")
    )
    chains: dict[str, list[str]] = {SNAT_CHAIN: snat}
    builtin: dict[str, list[str]] = {"POSTROUTING": [f"{_c(COMMENT_SNAT_JUMP)} -j {SNAT_CHAIN}"]}
    if backend is ConnmarkBackend.IPTABLES:
        connmark = [f"{_dst(cidr)}{_c(COMMENT_CONNMARK_RETURN)} -j RETURN" for cidr in config.return_cidrs]
        connmark.append(f"{_c(COMMENT_CONNMARK)} -j CONNMARK --set-xmark {mark}/{mark}")
        chains[CONNMARK_CHAIN] = connmark
        builtin["PREROUTING"] = [
            f"-i {config.veth_prefix}+ {_c(COMMENT_OUTBOUND)} -j {CONNMARK_CHAIN}",
            f"{_c(COMMENT_CONNMARK)} -j CONNMARK --restore-mark --nfmask {mark} --ctmask {mark}",
        ]
    return DesiredTable(name="nat", chains=chains, builtin=builtin)


def mangle_table(config: HostNetworkConfig, primary_ifname: str) -> DesiredTable:
    """mangle: NodePort return traffic leaves via the primary ENI (connmark on arrival, restore on reply).
    None in IPv6 mode: every pod is on the primary ENI, so replies leave through it anyway (upstream)."""
    if config.ipv6:
        return DesiredTable(name="mangle")
    mark = f"{config.connmark:#x}"
    restore = f"{_c(COMMENT_PRIMARY_ENI)} -j CONNMARK --restore-mark --nfmask {mark} --ctmask {mark}"
    rules = []
    if config.node_port_support:
        rules.append(
            f"-i {primary_ifname} {_c(COMMENT_PRIMARY_ENI)} -m addrtype --dst-type LOCAL --limit-iface-in "
            f"-j CONNMARK --set-xmark {mark}/{mark}"
        )
    if config.connmark_rule_wanted:
        rules.append(f"-i {config.veth_prefix}+ {restore}")
    if config.node_port_support:
        rules.append(f"-i vlan+ {restore}")
    return DesiredTable(name="mangle", builtin={"PREROUTING": rules} if rules else {})


def desired_tables(
    config: HostNetworkConfig, backend: ConnmarkBackend, primary_ifname: str
) -> list[DesiredTable]:
    """All iptables state vpccni wants, table by table."""
    return [nat_table(config, backend), mangle_table(config, primary_ifname)]
