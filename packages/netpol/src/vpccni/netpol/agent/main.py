"""`aws-network-policy-agent`: the node agent, a container of `aws-node` (upstream: `aws-eks-nodeagent`).

Watches this node's pods and every PolicyEndpoint, keeps the `inet vpccni-netpol` table, serves the CNI's
NPBackend calls on `<run dir>/npa.sock`, probes, metrics and introspection. It never deletes its table on
exit: the rules stay in force while it restarts, and established connections are never touched.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from kubernetes import client
from vpccni.k8sapi.config import load_config
from vpccni.k8sapi.corev1 import CoreV1Requests
from vpccni.k8sapi.manifests import pod_from_manifest
from vpccni.netpol import logs, policyendpoint
from vpccni.netpol.agent.conntrack import ConntrackTool
from vpccni.netpol.agent.engine import EngineSettings, PolicyEngine
from vpccni.netpol.agent.interfaces import RouteInterfaces
from vpccni.netpol.agent.introspect import Introspection
from vpccni.netpol.agent.metrics import AgentMetrics
from vpccni.netpol.agent.rpc import HEALTH_SERVICE, NpBackendServicer
from vpccni.netpol.agent.tables import NftPolicyTables
from vpccni.netpol.httpserve import HttpServer, text_response
from vpccni.netpol.kube import PE_PATH, ObjectCache, start_watch
from vpccni.netpol.settings import AgentSettings, SettingsError, load_agent_settings
from vpccni.rpc import rpc_pb2_grpc
from vpccni.rpc.serving import UnixGrpcServer

log = logging.getLogger(__name__)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _grpc(settings: AgentSettings, servicer: NpBackendServicer) -> UnixGrpcServer:
    return UnixGrpcServer(
        socket_path=settings.socket_path,
        health_service=HEALTH_SERVICE,
        register=[lambda server: rpc_pb2_grpc.add_NPBackendServicer_to_server(servicer, server)],
        tcp_address=settings.grpc_tcp_address,
    )


def run_disabled(settings: AgentSettings, tables: NftPolicyTables) -> int:
    """Network policy off: no table, and every EnforceNpToPod succeeds (upstream's behaviour)."""
    if tables.remove():
        log.info("network policy is disabled: removed the policy table")
    server = _grpc(settings, NpBackendServicer(None))
    server.start()
    health = HttpServer(
        settings.health_address,
        {"/healthz": lambda _: text_response("ok\n"), "/readyz": lambda _: text_response("ok\n")},
        name="agent-health",
    ).start()
    _wait_for_signal()
    server.stop()
    health.stop()
    return 0


def run(settings: AgentSettings) -> int:
    tables = NftPolicyTables()
    if not settings.enabled:
        return run_disabled(settings, tables)
    api_client = client.ApiClient(load_config())
    requests = CoreV1Requests(api_client)
    pods = ObjectCache(pod_from_manifest)
    pes = ObjectCache(policyendpoint.from_json)
    metrics = AgentMetrics()
    engine = PolicyEngine(
        tables=tables,
        pods=pods,
        policy_endpoints=pes,
        conntrack=ConntrackTool(),
        interfaces=RouteInterfaces(),
        settings=EngineSettings(
            mode=settings.mode, veth_prefix=settings.veth_prefix, enforce_timeout_s=settings.enforce_timeout_s
        ),
        on_apply=metrics.applied,
    )
    engine.start()
    watchers = [
        start_watch(
            requests, pods, path="/api/v1/pods", what="pods on this node",
            field_selector=f"spec.nodeName={settings.node_name}",
        ),
        start_watch(requests, pes, path=PE_PATH, what="policyendpoints"),
    ]  # fmt: skip
    server = _grpc(settings, NpBackendServicer(engine, count=lambda r: metrics.enforce.labels(r).inc()))
    server.start()

    def ready(_: object) -> tuple[int, str, bytes]:
        if not engine.synced:
            return text_response("waiting for the pod and PolicyEndpoint caches\n", 503)
        if engine.last_error:
            return text_response(f"the last table write failed: {engine.last_error}\n", 503)
        return text_response("ok\n")

    introspection = Introspection(
        policies=engine.policies,
        ruleset=lambda: engine.ruleset,
        policy_of=engine.policy_of,
        listing=tables.listing,
    )
    servers = [
        HttpServer(settings.health_address, {"/healthz": lambda _: text_response("ok\n"), "/readyz": ready},
                   name="agent-health"),
        HttpServer(settings.metrics_address, {"/metrics": metrics.exposition}, name="agent-metrics"),
        HttpServer(settings.introspection_address, introspection.routes(), name="agent-introspection"),
    ]  # fmt: skip
    for http in servers:
        http.start()
    log.info(
        "network policy agent on node %s, %s mode, serving %s",
        settings.node_name, settings.mode.value, settings.socket_path,
    )  # fmt: skip
    _wait_for_signal()
    log.info("stopping (the policy table stays in force)")
    server.stop()
    for watcher in watchers:
        watcher.stop()
    engine.stop()
    for http in servers:
        http.stop()
    api_client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_agent_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.configure(level=settings.log_level, log_file=settings.log_file)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
