"""One gRPC health check (`grpc.health.v1.Health/Check`) against ipamd's socket, with upstream's outcomes.

The outcomes and their exit codes are grpc-health-probe's, so probes and scripts written for upstream's
`/app/grpc-health-probe` read ours the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The service upstream's ipamd marks SERVING (grpc-go also reports the server as a whole, service "").
IPAMD_HEALTH_SERVICE = "grpc.health.v1.aws-node"


class HealthOutcome(enum.IntEnum):
    """Exit codes of grpc-health-probe."""

    SERVING = 0
    INVALID_ARGUMENTS = 1
    CONNECTION_FAILED = 2
    RPC_FAILED = 3
    NOT_SERVING = 4


@dataclass(frozen=True, kw_only=True)
class HealthResult:
    outcome: HealthOutcome
    detail: str

    @property
    def healthy(self) -> bool:
        return self.outcome is HealthOutcome.SERVING


def grpc_target(addr: str) -> str:
    """grpc-health-probe's `-addr` as a gRPC target: `unix:///p`, `unix:/p`, `host:port` or `:port`."""
    value = addr.strip()
    if value.startswith("unix:"):
        return value
    if value.startswith(":"):
        return "localhost" + value
    return value


def check_health(
    addr: str, *, service: str = "", connect_timeout_s: float = 1.0, rpc_timeout_s: float = 1.0
) -> HealthResult:
    target = grpc_target(addr)
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            return HealthResult(
                outcome=HealthOutcome.CONNECTION_FAILED,
                detail=f"timeout: failed to connect service {addr!r} within {connect_timeout_s:g}s",
            )
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=rpc_timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return HealthResult(
                outcome=HealthOutcome.RPC_FAILED,
                detail=f"health rpc failed: {code} {exc.details() if hasattr(exc, 'details') else exc}",
            )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return HealthResult(
            outcome=HealthOutcome.NOT_SERVING, detail=f"service unhealthy (responded with {status!r})"
        )
    return HealthResult(outcome=HealthOutcome.SERVING, detail=f"status: {status}")
