"""The gRPC server of ipamd (upstream's CNIBackend and ConfigServerBackend on ipamd.sock), put together from
the plan and the node's identity."""

from __future__ import annotations

from vpccni.awsutils.node import NodeIdentity
from vpccni.cniplugin.version import VERSION
from vpccni.ipamd.cardallocator import CardAllocators
from vpccni.ipamd.grpc.backend import BranchRpc, CniBackendServicer, ConfigServerServicer, NodeFacts
from vpccni.ipamd.grpc.server import GrpcServer, GrpcServerSettings
from vpccni.ipamd.plan import WiringPlan
from vpccni.rpc import rpc_pb2_grpc


def grpc_server(
    plan: WiringPlan, ident: NodeIdentity, allocator: CardAllocators, branches: BranchRpc | None
) -> GrpcServer:
    """Not started yet. The replies carry the VPC CIDRs of the node's mode only (upstream's: IPv6 mode's
    AddNetwork has no VPCv4CIDRs, IPv4 mode's no VPCv6CIDRs)."""
    serve = plan.serve
    facts = NodeFacts(
        version=VERSION,
        use_external_snat=serve.use_external_snat,
        exclude_snat_cidrs=serve.exclude_snat_cidrs,
        network_policy_mode=serve.network_policy_mode,
        multi_nic=plan.pool.init.multi_nic,
        node_ipv4=ident.primary_ipv4,
        node_ipv6=ident.primary_ipv6,
        instance_id=ident.instance_id,
        region=ident.region,
    )
    ipv6 = serve.ipv6
    backend = CniBackendServicer(
        allocator=allocator,
        facts=facts,
        vpc_cidrs=lambda: () if ipv6 else ident.vpc_ipv4_cidrs,
        vpc_v6_cidrs=lambda: ident.vpc_ipv6_cidrs if ipv6 else (),
        multi_nic=allocator if plan.pool.init.multi_nic else None,
        branches=branches,
    )
    config_server = ConfigServerServicer(facts=facts)
    return GrpcServer(
        settings=GrpcServerSettings(
            socket_path=serve.ipamd_socket, tcp_address=serve.grpc_tcp_address, allowed_uids=frozenset({0})
        ),
        register=(
            lambda server: rpc_pb2_grpc.add_CNIBackendServicer_to_server(backend, server),
            lambda server: rpc_pb2_grpc.add_ConfigServerBackendServicer_to_server(config_server, server),
        ),
    )
