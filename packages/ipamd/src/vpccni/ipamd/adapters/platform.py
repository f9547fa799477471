"""What the daemon touches outside the process: IMDS and EC2, netlink, iptables, nft, pod namespaces, the
Kubernetes API server. `Platform()` is the real node's; a test passes the stateful fakes of each library, and
with a fake clock the whole daemon runs without a machine, a cloud or a wall clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vpccni.awsutils.clock import Clock
from vpccni.awsutils.node import AwsConfig, AwsNode
from vpccni.awsutils.observer import ApiObserver
from vpccni.ipamd.adapters.kube import kube_api
from vpccni.ipamd.plan import KubePlan
from vpccni.k8sapi import KubeApi
from vpccni.networkutils.iptables import CommandIptables, Iptables, IptablesCommands
from vpccni.networkutils.netlink import Netlink, open_netlink
from vpccni.networkutils.netns import NetnsNetlink, ThreadNetnsNetlink
from vpccni.networkutils.nft import CommandNft, Nft


def connect_aws(*, config: AwsConfig, observer: ApiObserver, clock: Clock) -> AwsNode:
    """The instance's identity from IMDS and an EC2 client (the one call at start that reads IMDS)."""
    return AwsNode.connect(config=config, observer=observer, clock=clock)


def real_kube_api(kube: KubePlan) -> KubeApi | None:
    return kube_api(kube.endpoint, kube.client)


def ip6tables() -> Iptables:
    return CommandIptables(commands=IptablesCommands.ipv6())


@dataclass(frozen=True, kw_only=True)
class Platform:
    connect_aws: Callable[..., AwsNode] = connect_aws  # (config=, observer=, clock=)
    kube_api: Callable[[KubePlan], KubeApi | None] = real_kube_api
    open_netlink: Callable[[], Netlink] = open_netlink
    iptables: Callable[[], Iptables] = CommandIptables
    ip6tables: Callable[[], Iptables] = ip6tables  # only used with IPv6 egress of IPv4 pods
    nft: Callable[[], Nft] = CommandNft
    namespaces: Callable[[], NetnsNetlink] = ThreadNetnsNetlink
