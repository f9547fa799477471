"""`vpccni-netpol-controller`: watches NetworkPolicies, pods and namespaces cluster-wide and keeps the
PolicyEndpoint objects the node agents enforce. A Deployment of one or more replicas: with leader election
(the default, as upstream's) only the Lease holder writes, the others wait with warm caches."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Sequence

from kubernetes import client
from vpccni.k8sapi.config import load_config
from vpccni.k8sapi.corev1 import CoreV1Requests
from vpccni.netpol import logs, networkpolicy
from vpccni.netpol.controller.cluster import namespace_from_json, pod_from_json
from vpccni.netpol.controller.leader import KubeLeaseStore, LeaderElector
from vpccni.netpol.controller.reconciler import PolicyEndpointReconciler, parse_policy
from vpccni.netpol.httpserve import HttpServer, text_response
from vpccni.netpol.kube import PE_PATH, KubePolicyEndpointWriter, ObjectCache, start_watch
from vpccni.netpol.policyendpoint import from_json as policy_endpoint_from_json
from vpccni.netpol.settings import SettingsError, load_controller_settings

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_controller_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.configure(level=settings.log_level)
    api_client = client.ApiClient(load_config(settings.kube_endpoint))
    requests = CoreV1Requests(api_client)
    policies = ObjectCache(parse_policy)
    pods = ObjectCache(pod_from_json)
    namespaces = ObjectCache(namespace_from_json)
    endpoints = ObjectCache(policy_endpoint_from_json)
    reconciler = PolicyEndpointReconciler(
        policies=policies,
        pods=pods,
        namespaces=namespaces,
        endpoints=endpoints,
        writer=KubePolicyEndpointWriter(api_client),
        settings=settings,
    )
    # Listeners are attached before the watches start, so no change is missed.
    policies.listen(reconciler.on_policies)
    pods.listen(reconciler.on_pods)
    namespaces.listen(reconciler.on_namespaces)
    endpoints.listen(reconciler.on_endpoints)
    caches = (policies, pods, namespaces, endpoints)

    def ready(_: object) -> tuple[int, str, bytes]:
        synced = all(c.synced.is_set() for c in caches)
        return text_response("ok\n" if synced else "caches not synced yet\n", 200 if synced else 503)

    health = HttpServer(
        settings.health_address,
        {"/healthz": lambda _: text_response("ok\n"), "/readyz": ready},
        name="controller-health",
    ).start()
    watchers = [
        start_watch(requests, policies, path=networkpolicy.PATH, what="networkpolicies"),
        start_watch(requests, pods, path="/api/v1/pods", what="pods"),
        start_watch(requests, namespaces, path="/api/v1/namespaces", what="namespaces"),
        start_watch(requests, endpoints, path=PE_PATH, what="policyendpoints"),
    ]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("network policy controller started (chunk size %d)", settings.chunk_size)
    still_leading = True
    if settings.leader_election:
        store = KubeLeaseStore(
            api_client, namespace=settings.leader_election_namespace, name=settings.leader_election_id
        )
        identity = f"{socket.gethostname()}_{uuid.uuid4()}"
        log.info(
            "waiting for the Lease %s/%s as %s",
            settings.leader_election_namespace, settings.leader_election_id, identity,
        )  # fmt: skip
        still_leading = LeaderElector(store=store, identity=identity).run(stop, reconciler.start)
    else:
        reconciler.start()
        stop.wait()
    log.info("stopping")
    for watcher in watchers:
        watcher.stop()
    reconciler.stop()
    health.stop()
    api_client.close()
    if not still_leading:
        return 1  # as upstream's: exit, and let the Deployment restart us as a standby
    return 0


if __name__ == "__main__":
    sys.exit(main())
