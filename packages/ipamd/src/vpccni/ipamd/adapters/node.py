"""Every real adapter of one node, built from the settings and the AWS layer (no I/O until used)."""

from __future__ import annotations

from dataclasses import dataclass

from vpccni.awsutils.clock import Clock
from vpccni.awsutils.node import AwsNode
from vpccni.ipamd.adapters.aws import Ec2CloudPort, ImdsMetadataPort, SubnetCidrs, subnet_cidr_lookup
from vpccni.ipamd.adapters.network import EniHostNetwork, HostNetworkSetup, HostSettings
from vpccni.ipamd.settings import Settings
from vpccni.networkutils.host import HostNetwork
from vpccni.networkutils.iptables import CommandIptables
from vpccni.networkutils.netlink import Netlink
from vpccni.networkutils.netns import ThreadNetnsNetlink
from vpccni.networkutils.nft import CommandNft
from vpccni.networkutils.pod import PodWiring


@dataclass(frozen=True, kw_only=True)
class NodeAdapters:
    """The ports node init, the pool, the reconciler and the CNI endpoint use, on this host."""

    netlink: Netlink
    subnets: SubnetCidrs
    metadata: ImdsMetadataPort
    cloud: Ec2CloudPort
    network: EniHostNetwork
    host: HostNetworkSetup
    wiring: PodWiring

    @classmethod
    def build(cls, *, aws: AwsNode, settings: Settings, netlink: Netlink, clock: Clock) -> NodeAdapters:
        s, ident = settings, aws.identity
        subnets = SubnetCidrs(subnet_cidr_lookup(aws.ec2))
        return cls(
            netlink=netlink,
            subnets=subnets,
            metadata=ImdsMetadataPort(aws.metadata, subnets=subnets),
            cloud=Ec2CloudPort(
                enis=aws.enis,
                metadata=aws.metadata,
                subnets=subnets,
                candidate_subnets=lambda: aws.candidate_subnets(discovery=s.enable_subnet_discovery),
                security_groups=lambda: ident.security_groups,
                clock=clock,
            ),
            network=EniHostNetwork(netlink=netlink, mtu=s.eni_mtu, subnet_cidr=subnets.get),
            host=HostNetworkSetup(
                host=HostNetwork(netlink=netlink, iptables=CommandIptables(), nft=CommandNft()),
                settings=HostSettings(
                    node_ip=ident.primary_ipv4,
                    primary_mac=ident.primary_mac,
                    exclude_snat_cidrs=s.exclude_snat_cidrs,
                    external_snat=s.external_snat,
                    randomize_snat=s.randomize_snat,
                    node_port_support=s.node_port_support,
                    connmark=s.connmark,
                    external_service_cidrs=s.external_service_cidrs,
                    mtu=s.eni_mtu,
                    pod_mtu=s.pod_mtu,
                    veth_prefix=s.veth_prefix,
                ),
                vpc_cidrs=lambda: tuple(aws.metadata.vpc_ipv4_cidrs(ident.primary_mac)),
            ),
            wiring=PodWiring(host=netlink, namespaces=ThreadNetnsNetlink()),
        )
