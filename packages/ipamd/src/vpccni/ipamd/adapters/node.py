"""Every adapter of one node, built from the wiring plan, the AWS layer and the platform (its netlink)."""

from __future__ import annotations

from dataclasses import dataclass

from vpccni.awsutils.clock import Clock
from vpccni.awsutils.node import AwsNode
from vpccni.ipamd.adapters.aws import Ec2CloudPort, ImdsMetadataPort, SubnetCidrs, subnet_cidr_lookup
from vpccni.ipamd.adapters.network import EniHostNetwork, HostNetworkSetup
from vpccni.ipamd.adapters.platform import Platform
from vpccni.ipamd.egress.host import EgressHostSetup
from vpccni.ipamd.plan import WiringPlan
from vpccni.networkutils.egress import EgressHostRules
from vpccni.networkutils.eni import LinkRetry
from vpccni.networkutils.host import HostNetwork
from vpccni.networkutils.netlink import Netlink
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
    def build(cls, *, aws: AwsNode, plan: WiringPlan, platform: Platform, clock: Clock) -> NodeAdapters:
        ident = aws.identity
        discovery = plan.pool.subnet_discovery
        netlink = platform.open_netlink()
        link_retry = LinkRetry(sleep=clock.sleep)  # waiting for a new ENI's link is on the daemon's clock
        subnets = SubnetCidrs(subnet_cidr_lookup(aws.ec2))
        return cls(
            netlink=netlink,
            subnets=subnets,
            metadata=ImdsMetadataPort(aws.metadata, subnets=subnets),
            cloud=Ec2CloudPort(
                enis=aws.enis,
                subnets=subnets,
                candidate_subnets=lambda: aws.candidate_subnets(discovery=discovery),
                security_groups=lambda: ident.security_groups,
            ),
            network=EniHostNetwork(
                netlink=netlink, mtu=plan.host.mtu, subnet_cidr=subnets.get, link_retry=link_retry
            ),
            host=HostNetworkSetup(
                host=HostNetwork(
                    netlink=netlink, iptables=platform.iptables(), nft=platform.nft(), link_retry=link_retry
                ),
                settings=plan.host,
                node_ip=ident.primary_ipv4,
                primary_mac=ident.primary_mac,
                vpc_cidrs=lambda: tuple(aws.metadata.vpc_ipv4_cidrs(ident.primary_mac)),
                egress=EgressHostSetup(
                    rules=EgressHostRules(
                        iptables=platform.iptables(),
                        ip6tables=platform.ip6tables() if plan.host.v6_egress else None,
                    ),
                    config=plan.egress,
                    ipv6_cluster=plan.host.ipv6,
                    node_ipv4=ident.primary_ipv4,
                    node_ipv6=ident.primary_ipv6,
                ),
            ),
            wiring=PodWiring(host=netlink, namespaces=platform.namespaces()),
        )
