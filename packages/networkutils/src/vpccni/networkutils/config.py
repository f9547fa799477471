"""The host-network settings, as one frozen value (ipamd reads the environment and builds it)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .names import DEFAULT_VETH_PREFIX

DEFAULT_CONNMARK = 0x80


class SnatRandomization(enum.Enum):
    """`AWS_VPC_K8S_CNI_RANDOMIZESNAT`: how SNAT picks source ports."""

    PRNG = "prng"  # --random-fully (default)
    HASHRANDOM = "hashrandom"  # --random
    NONE = "none"


class ConnmarkBackend(enum.Enum):
    """Where the off-VPC connmark rules live: iptables nat, or the nft table `ip aws-cni`."""

    IPTABLES = "iptables"
    NFTABLES = "nftables"


@dataclass(frozen=True, kw_only=True)
class HostNetworkConfig:
    """Everything `HostNetwork.apply` needs (upstream env names in comments).

    `connmark_backend=None` picks nftables when the host's iptables is the nf_tables
    flavour, as upstream does.
    """

    node_ip: IPv4Address  # IMDS local-ipv4
    primary_mac: str  # IMDS mac
    vpc_cidrs: tuple[IPv4Network, ...]  # IMDS vpc-ipv4-cidr-blocks
    exclude_snat_cidrs: tuple[IPv4Network, ...] = ()  # AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS
    external_snat: bool = False  # AWS_VPC_K8S_CNI_EXTERNALSNAT
    randomize_snat: SnatRandomization = SnatRandomization.PRNG  # AWS_VPC_K8S_CNI_RANDOMIZESNAT
    node_port_support: bool = True  # AWS_VPC_CNI_NODE_PORT_SUPPORT
    connmark: int = DEFAULT_CONNMARK  # AWS_VPC_K8S_CNI_CONNMARK
    external_service_cidrs: tuple[IPv4Network, ...] = ()  # AWS_EXTERNAL_SERVICE_CIDRS
    mtu: int = 9001  # AWS_VPC_ENI_MTU
    veth_prefix: str = DEFAULT_VETH_PREFIX  # AWS_VPC_K8S_CNI_VETHPREFIX
    connmark_backend: ConnmarkBackend | None = None
    # ENABLE_POD_ENI with POD_SECURITY_GROUP_ENFORCING_MODE=strict: the `local` table's rule moves from
    # priority 0 to 20, below the branch pods' VLAN rules (10), so their traffic to node addresses leaves
    # through their branch ENI too.
    local_rule_after_vlan_rules: bool = False
    # ENABLE_IPv6: pods keep their VPC IPv6 address everywhere, so no SNAT and no connmark (upstream installs
    # neither in IPv6 mode); the fwmark rule is an IPv6 one and the node forwards IPv6.
    ipv6: bool = False
    # ENABLE_V6_EGRESS (IPv4 cluster): the node forwards its pods' IPv6 egress, keeping its own IPv6 route.
    v6_egress: bool = False

    @property
    def snat_wanted(self) -> bool:
        """The SNAT chain and the connmark for off-VPC traffic of IPv4 pods."""
        return not self.external_snat and not self.ipv6

    @property
    def connmark_rule_wanted(self) -> bool:
        """Rule 1024 and the eni+ restore-mark exist when NodePort support is on or SNAT is ours."""
        return self.node_port_support or not self.external_snat

    @property
    def return_cidrs(self) -> tuple[IPv4Network, ...]:
        """Destinations that keep their pod source address: the VPC CIDRs, then the exclusions."""
        return (*self.vpc_cidrs, *self.exclude_snat_cidrs)
