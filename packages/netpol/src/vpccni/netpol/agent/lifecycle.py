"""What the agent does whether or not it enforces: its NPBackend gRPC server and waiting for a stop signal."""

from __future__ import annotations

import signal
import threading

from vpccni.netpol.agent.rpc import HEALTH_SERVICE, NpBackendServicer
from vpccni.netpol.settings import AgentSettings
from vpccni.rpc import rpc_pb2_grpc
from vpccni.rpc.serving import UnixGrpcServer


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def npbackend_server(settings: AgentSettings, servicer: NpBackendServicer) -> UnixGrpcServer:
    return UnixGrpcServer(
        socket_path=settings.socket_path,
        health_service=HEALTH_SERVICE,
        register=[lambda server: rpc_pb2_grpc.add_NPBackendServicer_to_server(servicer, server)],
        tcp_address=settings.grpc_tcp_address,
    )
