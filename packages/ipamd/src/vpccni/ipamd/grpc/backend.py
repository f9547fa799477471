"""Upstream's `CNIBackend` and `ConfigServerBackend` services, allocation only (no pod wiring).

Semantics as upstream's `rpc_handler.go`: a client of another version is refused with FAILED_PRECONDITION
"wrong client version" (so an upstream plugin, which sends its own release, is refused as upstream's ipamd
refuses another release's plugin); a call over TCP is refused with PERMISSION_DENIED (only the Unix socket
knows its caller); an ADD that finds no address answers `Success=false` (the reason is logged, the
upstream plugin turns it into a CNI error); a DEL of an unknown pod succeeds with no metadata. An IPv6 pod's
address travels in `IPv6Addr` and the VPC's IPv6 CIDRs in `VPCv6CIDRs`, as upstream's IPv6 mode sends them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Protocol

import grpc
from google.protobuf import empty_pb2
from vpccni.ipamd.allocator import Allocation, NoAddressError, NotReady
from vpccni.ipamd.cni.ports import MultiNicAllocator, PodAddressAllocator
from vpccni.ipamd.sgp.lookup import BranchLookupError
from vpccni.ipamd.sgp.rpc_branch import BranchReply
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger(__name__)

WRONG_CLIENT_VERSION = "wrong client version"
OVER_TCP = (
    "CNIBackend calls are not served over TCP (no peer credentials there): use the Unix socket ipamd.sock"
)


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """What the replies carry besides the pod's address (settings and IMDS, read once at start)."""

    version: str
    use_external_snat: bool
    exclude_snat_cidrs: tuple[IPv4Network, ...] = ()
    network_policy_mode: str = ""
    multi_nic: bool = False  # ENABLE_MULTI_NIC
    node_ipv4: IPv4Address | None = None
    node_ipv6: IPv6Address | None = None
    instance_id: str = ""
    region: str = ""


class BranchRpc(Protocol):
    def branch_of(self, namespace: str, name: str) -> BranchReply | None:
        """A branch-ENI pod's reply fields, None for an ordinary pod; raises BranchLookupError."""
        ...


def _metadata(allocation: Allocation) -> Any:
    return _address(allocation.ip, device_number=allocation.device_number, route_table=allocation.route_table)


def _address(ip: IPv4Address | IPv6Address, *, device_number: int = 0, route_table: int = 0) -> Any:
    """The address in its family's field (an IPv6 node's go in IPv6Addr, as upstream's replies)."""
    family = "IPv6Addr" if ip.version == 6 else "IPv4Addr"
    return rpc_pb2.IPAllocationMetadata(
        **{family: str(ip)}, DeviceNumber=device_number, RouteTableId=route_table
    )


def _check_caller(client_version: str, ours: str, context: grpc.ServicerContext) -> None:
    """Upstream's version check, and no address changes over TCP, where the caller cannot be known."""
    if context.peer().startswith(("ipv4:", "ipv6:")):
        log.warning("refusing a CNIBackend call over TCP from %s", context.peer())
        context.abort(grpc.StatusCode.PERMISSION_DENIED, OVER_TCP)
    if client_version != ours:
        log.warning("refusing a gRPC client of version %r (ipamd is %s)", client_version, ours)
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, WRONG_CLIENT_VERSION)


class CniBackendServicer(rpc_pb2_grpc.CNIBackendServicer):  # type: ignore[misc]
    """`rpc.CNIBackend` for upstream clients (the Go aws-cni plugin, tools): addresses only."""

    def __init__(
        self,
        *,
        allocator: PodAddressAllocator,
        facts: NodeFacts,
        vpc_cidrs: Callable[[], Sequence[IPv4Network]],
        multi_nic: MultiNicAllocator | None = None,
        branches: BranchRpc | None = None,
        vpc_v6_cidrs: Callable[[], Sequence[IPv6Network]] = lambda: (),
    ) -> None:
        self._allocator = allocator
        self._facts = facts
        self._vpc_cidrs = vpc_cidrs  # IPv4 mode (IPv6 mode: empty, as upstream's reply)
        self._vpc_v6_cidrs = vpc_v6_cidrs  # IPv6 mode
        self._multi_nic = multi_nic
        self._branches = branches  # ENABLE_POD_ENI

    def AddNetwork(self, request: Any, context: grpc.ServicerContext) -> Any:
        _check_caller(request.ClientVersion, self._facts.version, context)
        pod = f"{request.K8S_POD_NAMESPACE}/{request.K8S_POD_NAME}"
        reply = rpc_pb2.AddNetworkReply(
            UseExternalSNAT=self._facts.use_external_snat,
            VPCv4CIDRs=[str(c) for c in (*self._vpc_cidrs(), *self._facts.exclude_snat_cidrs)],
            VPCv6CIDRs=[str(c) for c in self._vpc_v6_cidrs()],
            NetworkPolicyMode=self._facts.network_policy_mode,
        )
        if self._branches is not None:
            try:
                branch = self._branches.branch_of(request.K8S_POD_NAMESPACE, request.K8S_POD_NAME)
            except BranchLookupError as err:
                log.warning("AddNetwork for %s: %s", pod, err)
                reply.Success = False
                return reply
            if branch is not None:
                return _branch_reply(reply, branch, pod)
        if request.RequiresMultiNICAttachment and self._multi_nic is None:
            # Upstream's answer too: the pod asks for what this node was not set up to give.
            log.warning(
                "AddNetwork for %s: one interface per network card asked, ENABLE_MULTI_NIC is off", pod
            )
            reply.Success = False
            return reply
        key = {
            "network": request.NetworkName,
            "container_id": request.ContainerID,
            "ifname": request.IfName,
            "pod_namespace": request.K8S_POD_NAMESPACE,
            "pod_name": request.K8S_POD_NAME,
        }
        try:
            if request.RequiresMultiNICAttachment and self._multi_nic is not None:
                allocations = self._multi_nic.assign_each_card(**key)
            else:
                allocations = (self._allocator.assign(**key),)
        except NotReady as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        except NoAddressError as err:
            log.warning("AddNetwork for %s: no address: %s", pod, err)
            reply.Success = False
            return reply
        reply.Success = True
        reply.IPAllocationMetadata.extend(_metadata(a) for a in allocations)
        log.info(
            "AddNetwork for %s (container %s): %s",
            pod, request.ContainerID, ", ".join(str(a.ip) for a in allocations),
        )  # fmt: skip
        return reply

    def DelNetwork(self, request: Any, context: grpc.ServicerContext) -> Any:
        _check_caller(request.ClientVersion, self._facts.version, context)
        each_card = (
            self._multi_nic.lookup_each_card(
                network=request.NetworkName, container_id=request.ContainerID, ifname=request.IfName
            )
            if self._multi_nic is not None
            else ()
        )
        released = self._allocator.release(
            network=request.NetworkName,
            container_id=request.ContainerID,
            ifname=request.IfName,
            pod_namespace=request.K8S_POD_NAMESPACE,
            pod_name=request.K8S_POD_NAME,
            reason=request.Reason or "PodDeleted",
        )
        reply = rpc_pb2.DelNetworkReply(Success=True, NetworkPolicyMode=self._facts.network_policy_mode)
        if released is None and self._branches is not None:
            # Upstream's answer for a pod the datastore does not know: its branch ENI's VLAN and address,
            # so the plugin tears the VLAN wiring down.
            try:
                branch = self._branches.branch_of(request.K8S_POD_NAMESPACE, request.K8S_POD_NAME)
            except BranchLookupError:
                branch = None
            if branch is not None:
                reply.PodVlanId = branch.vlan_id
                reply.IPAllocationMetadata.append(_address(branch.ip))
        if released is not None:
            # A multi-NIC pod's DEL released every card's address: upstream's reply lists them all.
            reply.IPAllocationMetadata.extend(
                _metadata(a) for a in (each_card if len(each_card) > 1 else (released,))
            )
            log.info(
                "DelNetwork for %s/%s (container %s): released %s",
                request.K8S_POD_NAMESPACE,
                request.K8S_POD_NAME,
                request.ContainerID,
                released.ip,
            )
        return reply


def _branch_reply(reply: Any, branch: BranchReply, pod: str) -> Any:
    """A branch-ENI pod's reply, as upstream's: device number and table -1 (the VLAN decides both)."""
    reply.Success = True
    reply.IPAllocationMetadata.append(_address(branch.ip, device_number=-1, route_table=-1))
    reply.PodVlanId = branch.vlan_id
    reply.PodENIMAC = branch.mac
    reply.PodENISubnetGW = str(branch.gateway)
    reply.ParentIfIndex = branch.parent_ifindex
    log.info("AddNetwork for %s: branch ENI %s on VLAN %d", pod, branch.ip, branch.vlan_id)
    return reply


class ConfigServerServicer(rpc_pb2_grpc.ConfigServerBackendServicer):  # type: ignore[misc]
    """`rpc.ConfigServerBackend`: what the network policy agent asks ipamd at its start."""

    def __init__(self, *, facts: NodeFacts) -> None:
        self._facts = facts

    def GetNetworkPolicyConfigs(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> Any:
        f = self._facts
        return rpc_pb2.NetworkPolicyAgentConfigReply(
            NetworkPolicyMode=f.network_policy_mode,
            MultiNICEnabled=f.multi_nic,
            NodeIPv4="" if f.node_ipv4 is None else str(f.node_ipv4),
            NodeIPv6="" if f.node_ipv6 is None else str(f.node_ipv6),
            InstanceID=f.instance_id,
            Region=f.region,
        )
