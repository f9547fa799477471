"""What upstream's `AddNetwork`/`DelNetwork` replies carry for a branch-ENI pod (security groups for pods):
the pod's address, VLAN id, branch MAC and subnet gateway from its `vpc.amazonaws.com/pod-eni` annotation, and
the trunk link's ifindex, so an upstream `aws-cni` talking gRPC to this ipamd wires the pod itself. The local
CNI path (`vpccni.ipamd.sgp.cni`) wires branch pods in ipamd and does not use this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vpccni.ipamd.sgp.lookup import BranchLookupError, BranchPodLookup
from vpccni.networkutils.model import IPAddress
from vpccni.networkutils.netlink import Netlink


@dataclass(frozen=True, kw_only=True)
class BranchReply:
    ip: IPAddress  # the pod's: IPv6 on an ENABLE_IPv6 node
    vlan_id: int
    mac: str
    gateway: IPAddress  # IPv6: EC2's router at fe80:ec2::1, as upstream's GetIPv6Gateway
    parent_ifindex: int


class BranchRpcLookup:
    """`vpccni.ipamd.grpc.backend.BranchRpc` over the pod cache and the trunk's link."""

    def __init__(
        self, *, lookup: BranchPodLookup, trunk_link: Callable[[], str | None], netlink: Netlink
    ) -> None:
        self._lookup = lookup
        self._trunk_link = trunk_link
        self._netlink = netlink

    def branch_of(self, namespace: str, name: str) -> BranchReply | None:
        """None for an ordinary pod; raises BranchLookupError when the pod's branch ENI cannot be given."""
        eni = self._lookup.branch_eni(
            namespace, name, wait_s=0.0
        )  # upstream answers at once; kubelet retries
        if eni is None:
            return None
        trunk = self._trunk_link()
        link = self._netlink.link(trunk) if trunk else None
        if link is None:
            raise BranchLookupError(
                f"pod {namespace}/{name} has a branch ENI but no trunk ENI link is up on this node yet",
                retryable=True,
            )
        return BranchReply(
            ip=eni.ip, vlan_id=eni.vlan_id, mac=eni.mac, gateway=eni.gateway, parent_ifindex=link.index
        )
