"""The enforcing agent: this node's pods and every PolicyEndpoint watched, the engine writing the table, and
what it serves (NPBackend, probes, metrics, introspection). Loaded only when network policy is on: the
Kubernetes client stays out of a disabled agent's memory."""

from __future__ import annotations

import logging

from kubernetes import client
from vpccni.k8sapi.config import load_config
from vpccni.k8sapi.corev1 import CoreV1Requests
from vpccni.k8sapi.manifests import pod_from_manifest
from vpccni.netpol import policyendpoint
from vpccni.netpol.agent.conntrack import ConntrackTool
from vpccni.netpol.agent.engine import EngineSettings, PolicyEngine
from vpccni.netpol.agent.interfaces import RouteInterfaces
from vpccni.netpol.agent.introspect import Introspection
from vpccni.netpol.agent.lifecycle import npbackend_server, wait_for_signal
from vpccni.netpol.agent.metrics import AgentMetrics
from vpccni.netpol.agent.rpc import NpBackendServicer
from vpccni.netpol.agent.tables import NftPolicyTables
from vpccni.netpol.httpserve import HttpServer, text_response
from vpccni.netpol.kube import PE_PATH, ObjectCache, start_watch
from vpccni.netpol.settings import AgentSettings

log = logging.getLogger(__name__)


def run(settings: AgentSettings, tables: NftPolicyTables) -> int:
    """Enforce: watch, compute, write the table; until SIGTERM or SIGINT."""
    api_client = client.ApiClient(load_config(settings.kube_endpoint))
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
    server = npbackend_server(
        settings, NpBackendServicer(engine, count=lambda r: metrics.enforce.labels(r).inc())
    )
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
    wait_for_signal()
    log.info("stopping (the policy table stays in force)")
    server.stop()
    for watcher in watchers:
        watcher.stop()
    engine.stop()
    for http in servers:
        http.stop()
    api_client.close()
    return 0
