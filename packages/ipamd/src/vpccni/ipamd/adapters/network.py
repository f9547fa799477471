"""networkutils behind node init's and the pool's network ports (host network, secondary ENIs, pod rules).

ipamd runs in the host's network namespace, so every adapter works on the calling namespace through one
netlink handle opened at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING

from vpccni.ipamd.datastore.model import AssignedAddress
from vpccni.ipamd.datastore.records import route_table_id
from vpccni.ipamd.egress.host import EgressHostSetup
from vpccni.ipamd.ports import EniAddresses, EniDescription
from vpccni.networkutils.config import HostNetworkConfig, SnatRandomization
from vpccni.networkutils.eni import EniNetwork, LinkRetry, setup_eni_network, teardown_eni_network
from vpccni.networkutils.host import HostNetwork
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.netlink import Netlink
from vpccni.networkutils.pod import PodInterface, PodWiring
from vpccni.networkutils.tables import route_table_for_eni

if TYPE_CHECKING:
    from vpccni.ipamd.cni.ports import HostPodRules

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class HostSettings:
    """The host-network part of the settings (the node's identity comes from IMDS, separately)."""

    exclude_snat_cidrs: tuple[IPv4Network, ...] = ()
    external_snat: bool = False
    randomize_snat: str = "prng"
    node_port_support: bool = True
    connmark: int = 0x80
    external_service_cidrs: tuple[IPv4Network, ...] = ()
    mtu: int = 9001
    pod_mtu: int = 9001
    veth_prefix: str = "eni"
    local_rule_after_vlan_rules: bool = False  # ENABLE_POD_ENI in strict mode
    ipv6: bool = False  # IPv6 mode: no SNAT or connmark for pods (they keep their VPC address), IPv6 sysctls
    v6_egress: bool = False  # ENABLE_V6_EGRESS: IPv6 forwarding for the pods' IPv6 egress


class HostNetworkSetup:
    """`HostNetworkPort`: networkutils' declarative `HostNetwork.apply`, VPC CIDRs read at call time."""

    def __init__(
        self,
        *,
        host: HostNetwork,
        settings: HostSettings,
        node_ip: IPv4Address,
        primary_mac: str,
        vpc_cidrs: Callable[[], tuple[IPv4Network, ...]],
        egress: EgressHostSetup | None = None,
    ) -> None:
        self._egress = egress
        self._host = host
        self._settings = settings
        self._node_ip = node_ip
        self._primary_mac = primary_mac
        self._vpc_cidrs = vpc_cidrs
        self.applied: HostNetworkConfig | None = None

    def config(self) -> HostNetworkConfig:
        s = self._settings
        return HostNetworkConfig(
            node_ip=self._node_ip,
            primary_mac=self._primary_mac,
            vpc_cidrs=self._vpc_cidrs(),
            exclude_snat_cidrs=s.exclude_snat_cidrs,
            external_snat=s.external_snat,
            randomize_snat=SnatRandomization(s.randomize_snat),
            node_port_support=s.node_port_support,
            connmark=s.connmark,
            external_service_cidrs=s.external_service_cidrs,
            mtu=s.mtu,
            veth_prefix=s.veth_prefix,
            local_rule_after_vlan_rules=s.local_rule_after_vlan_rules,
            ipv6=s.ipv6,
            v6_egress=s.v6_egress,
        )

    def setup_host_network(self) -> None:
        config = self.config()
        result = self._host.apply(config)
        self.applied = config
        if result.changes:
            log.info("host network: %d changes applied", len(result.changes))
        if self._egress is not None:
            self._egress.apply()

    def refresh(self) -> bool:
        """Re-apply when the VPC CIDRs changed (upstream re-reads them every 30 s); True when re-applied."""
        if self.applied is not None and self.applied.vpc_cidrs == self._vpc_cidrs():
            return False
        self.setup_host_network()
        return True


class EniHostNetwork:
    """`NodeNetworkPort`: a secondary ENI's link, route table and rule (networkutils' SetupENINetwork)."""

    def __init__(
        self,
        *,
        netlink: Netlink,
        mtu: int,
        subnet_cidr: Callable[[str], IPv4Network | None],
        link_retry: LinkRetry | None = None,
    ) -> None:
        self._netlink = netlink
        self._mtu = mtu
        self._subnet_cidr = subnet_cidr
        self._link_retry = link_retry or LinkRetry()

    def setup_eni(self, eni: EniAddresses) -> None:
        subnet = eni.subnet_cidr or self._subnet_cidr(eni.subnet_id)
        if subnet is None:
            raise RuntimeError(
                f"the CIDR of subnet {eni.subnet_id} of ENI {eni.eni_id} is unknown"
                " (IMDS subnet-ipv4-cidr-block and ec2:DescribeSubnets both failed);"
                " check IMDS access and the node role"
            )
        is_trunk = isinstance(eni, EniDescription) and eni.is_trunk
        setup_eni_network(
            self._netlink,
            EniNetwork(
                mac=eni.mac,
                primary_ip=eni.primary_ip,
                subnet=subnet,
                route_table=route_table_for_eni(eni.device_number, eni.network_card),
                mtu=self._mtu,
                is_trunk=is_trunk,
            ),
            retry=self._link_retry,
        )

    def teardown_eni(self, *, eni_id: str, device_number: int, primary_ip: IPv4Address | None) -> None:
        if primary_ip is None:
            return
        removed = teardown_eni_network(self._netlink, primary_ip)
        log.info("ENI %s (device %d): %d host rules removed", eni_id, device_number, removed)


class RestoredPodRules:
    """`PodRulesPort`: every restored pod gets exactly the host rules wiring adds (configureIPRulesForPods),
    and pod rules of an address of the pool that no allocation holds are removed.

    Those are what an ADD killed between its wiring and its checkpoint write leaves (the write overlaps the
    wiring): the address went back to the pool at restart, and its rules would route the next pod given it
    by the old ENI's table. Only addresses of ipamd's own ENIs are judged; rules of other addresses
    (another plugin's, a branch ENI's pods) are left alone. External service CIDR rules (1535) are part of
    `HostNetwork.apply`.
    """

    def __init__(
        self,
        *,
        wiring: PodWiring,
        host_rules: HostPodRules,
        assigned: Callable[[], tuple[AssignedAddress, ...]],
        pool_cidrs: Callable[[], Iterable[IPv4Network]],
        veth_prefix: str,
        mtu: int,
    ) -> None:
        self._wiring = wiring
        self._host_rules = host_rules
        self._assigned = assigned
        self._pool_cidrs = pool_cidrs
        self._veth_prefix = veth_prefix
        self._mtu = mtu

    def configure_pod_rules(self) -> None:
        assigned = self._assigned()
        specs = [
            PodInterface(
                host_veth=host_veth_name(pod.metadata.namespace, pod.metadata.name, prefix=self._veth_prefix),
                ip=pod.ip,
                ifname=pod.key.ifname,
                route_table=route_table_id(pod.device_number, pod.network_card),
                mtu=self._mtu,
            )
            for pod in assigned
            if pod.metadata.name  # no pod name, no veth name: the plugin's DEL still removes its rules
        ]
        # One listing of the host's rules for all restored pods (one per pod made start quadratic).
        changed = len(self._wiring.update_all_host_rules(specs))
        if changed:
            log.info("pod rules: %d changes for restored pods", changed)
        held = {pod.ip for pod in assigned}
        pool = tuple(self._pool_cidrs())
        for ip in sorted(self._host_rules.pod_rule_addresses() - held):
            if any(ip in cidr for cidr in pool):
                removed = self._host_rules.remove_pod_rules(ip)
                log.info("pod rules: %d rules of %s removed: no pod holds it (an ADD cut short)", removed, ip)
