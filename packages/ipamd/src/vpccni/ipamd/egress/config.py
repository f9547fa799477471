"""What egress gives pods, configured as upstream's entrypoint configures egress-cni
(cmd/aws-vpc-cni/main.go).

In an IPv6 cluster every pod gets IPv4 egress (ENABLE_V4_EGRESS, on by default): a second veth whose pod end
`v4if0` has an address of 169.254.172.0/22, SNATed to the node's IPv4 address. In an IPv4 cluster,
ENABLE_V6_EGRESS gives every pod IPv6 egress the same way: `v6if0` with an address of fd00::ac:00/118, SNATed
to the node's IPv6 address. The names, ranges and data directories are upstream's (they are in
`10-aws.conflist`, which an upstream egress-cni reads after a downgrade).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from vpccni.cniplugin import egress as shim_egress
from vpccni.networkutils.model import IPNetwork, default_network

# Upstream's strings, written into the conflist as they are (fd00::ac:00/118 is fd00::ac:0/118).
V4_SUBNET_TEXT = "169.254.172.0/22"
V6_SUBNET_TEXT = "fd00::ac:00/118"
V4_DATA_DIR = "/run/cni/v6pd/egress-v4-ipam"
V6_DATA_DIR = "/run/cni/v4pd/egress-v6-ipam"
V4_IFNAME = shim_egress.V4_IFNAME
V6_IFNAME = shim_egress.V6_IFNAME
V4_LOG_FILE = "/var/log/aws-routed-eni/egress-v4-plugin.log"
V6_LOG_FILE = "/var/log/aws-routed-eni/egress-v6-plugin.log"
IPAM_TYPE = "host-local"


@dataclass(frozen=True, kw_only=True)
class EgressConfig:
    """Egress for one node. `family` is what pods get egress *to*: 4 in an IPv6 cluster, 6 in an IPv4 one."""

    enabled: bool
    family: int
    data_dir: str
    log_file: str
    log_level: str = "DEBUG"
    randomize_snat: str = "prng"
    mtu: int = 9001

    @classmethod
    def for_cluster(
        cls, *, ipv6_cluster: bool, v4_egress: bool, v6_egress: bool, v4_log_file: str, v6_log_file: str,
        log_level: str, randomize_snat: str, mtu: int, data_dir: str = "",
    ) -> EgressConfig:  # fmt: skip
        """Upstream's choice: IPv4 egress in an IPv6 cluster, IPv6 egress in an IPv4 cluster."""
        if ipv6_cluster:
            return cls(
                enabled=v4_egress, family=4, data_dir=data_dir or V4_DATA_DIR, log_file=v4_log_file,
                log_level=log_level, randomize_snat=randomize_snat, mtu=mtu,
            )  # fmt: skip
        return cls(
            enabled=v6_egress, family=6, data_dir=data_dir or V6_DATA_DIR, log_file=v6_log_file,
            log_level=log_level, randomize_snat=randomize_snat, mtu=mtu,
        )  # fmt: skip

    @property
    def subnet(self) -> IPNetwork:
        return IPv4Network(V4_SUBNET_TEXT) if self.family == 4 else IPv6Network(V6_SUBNET_TEXT)

    @property
    def subnet_text(self) -> str:
        """The range as upstream writes it into the conflist."""
        return V4_SUBNET_TEXT if self.family == 4 else V6_SUBNET_TEXT

    @property
    def destination(self) -> IPNetwork:
        """The egress route's destination: every address of the family."""
        return default_network(self.family)

    @property
    def ifname(self) -> str:
        """The pod end of the egress veth."""
        return V4_IFNAME if self.family == 4 else V6_IFNAME
