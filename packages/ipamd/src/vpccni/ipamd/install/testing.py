"""Test doubles for the install commands (never imported by product code).

`python -m vpccni.ipamd.install.testing --socket PATH [--serve-after S] [--exit-code N] [--fail-after S]`
is a stand-in aws-k8s-agent: a real gRPC server with the standard health service on a Unix socket, which turns
SERVING after a delay and exits on SIGTERM, so the entrypoint's supervision runs against real gRPC.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from vpccni.ipamd.install.health import IPAMD_HEALTH_SERVICE


def start_health_server(socket_path: Path, *, serving: bool) -> tuple[grpc.Server, health.HealthServicer]:
    """A gRPC server on `socket_path` whose "" and `grpc.health.v1.aws-node` services report `serving`."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    set_serving(servicer, serving)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    return server, servicer


def set_serving(servicer: health.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", IPAMD_HEALTH_SERVICE):
        servicer.set(service, status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="stand-in aws-k8s-agent for entrypoint tests")
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--serve-after", type=float, default=0.0, help="seconds NOT_SERVING before SERVING")
    p.add_argument("--exit-code", type=int, default=0, help="status to exit with after SIGTERM")
    p.add_argument("--fail-after", type=float, default=-1.0, help="exit with --exit-code after S seconds")
    p.add_argument("--marker", type=Path, help="file written with 'started' when the server runs")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.fail_after >= 0:
        stop.wait(args.fail_after)
        return args.exit_code
    server, servicer = start_health_server(args.socket, serving=False)
    if args.marker:
        args.marker.write_text("started\n")
    if not stop.wait(args.serve_after):
        set_serving(servicer, True)
    stop.wait()
    server.stop(grace=0.5).wait()
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
