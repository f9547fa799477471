"""The node-wide egress rules ipamd writes with the host network at start (`networkutils.egress`).

- IPv6 cluster: new connections forwarded to 169.254.172.0/22 are rejected (always, as upstream's ipamd does
  in IPv6 mode), and with ENABLE_V4_EGRESS (default) the range is SNATed to the node's IPv4 address.
- IPv4 cluster with ENABLE_V6_EGRESS: the same for fd00::ac:00/118 in ip6tables, to the node's IPv6 address;
  a node without one gets no IPv6 egress (upstream's entrypoint turns the plugin off with a warning).
- Otherwise: any egress rules of an earlier configuration are removed.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address

from vpccni.ipamd.egress.config import EgressConfig
from vpccni.networkutils.config import SnatRandomization
from vpccni.networkutils.egress import EgressHostRules, EgressRules
from vpccni.networkutils.model import is_global_unicast

log = logging.getLogger(__name__)


def wanted_rules(
    config: EgressConfig, *, ipv6_cluster: bool, node_ipv4: IPv4Address, node_ipv6: IPv6Address | None
) -> list[EgressRules]:
    randomize = SnatRandomization(config.randomize_snat)
    if ipv6_cluster:
        return [
            EgressRules(
                family=4,
                subnet=config.subnet,
                node_ip=node_ipv4 if config.enabled else None,
                randomize=randomize,
            )
        ]
    if not config.enabled:
        return []
    if node_ipv6 is None or not is_global_unicast(node_ipv6):
        log.warning(
            "ENABLE_V6_EGRESS=true but the primary ENI has no global IPv6 address: pods get no IPv6 egress "
            "(assign the instance an IPv6 address in a dual-stack subnet)"
        )
        return []
    return [EgressRules(family=6, subnet=config.subnet, node_ip=node_ipv6, randomize=randomize)]


class EgressHostSetup:
    def __init__(
        self,
        *,
        rules: EgressHostRules,
        config: EgressConfig,
        ipv6_cluster: bool,
        node_ipv4: IPv4Address,
        node_ipv6: IPv6Address | None,
    ) -> None:
        self._rules = rules
        self._wanted = wanted_rules(
            config, ipv6_cluster=ipv6_cluster, node_ipv4=node_ipv4, node_ipv6=node_ipv6
        )

    @property
    def wanted(self) -> list[EgressRules]:
        return list(self._wanted)

    def apply(self) -> list[str]:
        return self._rules.apply(self._wanted)
