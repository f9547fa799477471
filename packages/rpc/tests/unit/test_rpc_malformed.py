"""A request that does not parse is the client's error: INVALID_ARGUMENT, one log line, no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc
from vpccni.rpc.serving import UnixGrpcServer

HEALTH = "grpc.health.v1.test"
GARBAGE = b"\xff\xff\xff\xff"  # a field number of zero and a truncated varint: no message parses it


class Backend(rpc_pb2_grpc.CNIBackendServicer):
    def AddNetwork(self, request: rpc_pb2.AddNetworkRequest, context: grpc.ServicerContext) -> object:
        return rpc_pb2.AddNetworkReply(Success=True, IPAllocationMetadata=[])


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[grpc.Channel]:
    server = UnixGrpcServer(
        socket_path=tmp_path / "test.sock",
        health_service=HEALTH,
        register=(lambda s: rpc_pb2_grpc.add_CNIBackendServicer_to_server(Backend(), s),),
    )
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{server.socket_path}") as ch:
            yield ch
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    "method", ["/rpc.CNIBackend/AddNetwork", "/rpc.CNIBackend/DelNetwork", "/grpc.health.v1.Health/Check"]
)
def test_a_request_that_does_not_parse_is_invalid_argument_without_a_traceback(
    channel: grpc.Channel, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call = channel.unary_unary(method)
    with pytest.raises(grpc.RpcError) as refused:
        call(GARBAGE, timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert method in refused.value.details()
    assert [r for r in caplog.records if r.exc_info] == []
    assert [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()] == [
        f"malformed {method} request refused: DecodeError: Error parsing message"
        + (" with type 'grpc.health.v1.HealthCheckRequest'" if "health" in method else "")
        + ("" if "health" in method else f" with type 'rpc.{method.rsplit('/', 1)[1]}Request'")
    ]


def test_well_formed_requests_are_served_as_before(channel: grpc.Channel) -> None:
    reply = rpc_pb2_grpc.CNIBackendStub(channel).AddNetwork(rpc_pb2.AddNetworkRequest(), timeout=5)
    assert reply.Success
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=HEALTH), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    # A method the server does not have is still grpcio's UNIMPLEMENTED.
    with pytest.raises(grpc.RpcError) as unknown:
        channel.unary_unary("/rpc.CNIBackend/NoSuchCall")(b"", timeout=5)
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
