"""The API server as an optional dependency (upstream since v1.19: ipamd starts without it).

At start ipamd waits a bounded time for `GET /version`; if the server does not answer, it carries on and a
background thread keeps probing, then starts the pod watch and reads the node once the server is back.
What ipamd reads from it (max pods, the node's unschedulable taint) falls back to safe defaults meanwhile.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.k8sapi import (
    CniNodeFeature,
    EniConfig,
    EventType,
    K8sApiError,
    KubeApi,
    KubeEndpoint,
    KubernetesApi,
    KubeSettings,
    NodeInfo,
    NotFound,
    eniconfig_name_for,
    ensure_cninode_features,
    load_config,
    wait_until_reachable,
)

log = logging.getLogger(__name__)

# CNINode feature name: upstream's contract with the VPC resource controller.
CUSTOM_NETWORKING = "CustomNetworking"
MISSING_IAM_PERMISSIONS = "MissingIAMPermissions"  # Event reason (upstream)


@dataclass(frozen=True, kw_only=True)
class KubeTimers:
    connect_timeout_s: float = 30.0  # upstream: try for 30 s at start, then continue without
    poll_interval_s: float = 5.0
    request_timeout_s: float = 5.0
    # How stale the node object may be for the pool's schedulable check (the pool asks every 2.5 s; one GET
    # per node per iteration would load the API server for nothing).
    node_ttl_s: float = 30.0


class EniConfigError(Exception):
    """The node's ENIConfig cannot be used; the message says what to fix."""


class KubeLink:
    """Connects to the API server now or later; thread-safe reads of what ipamd needs from it."""

    def __init__(
        self,
        *,
        api: KubeApi,
        timers: KubeTimers = KubeTimers(),
        clock: Clock | None = None,
    ) -> None:
        self._api = api
        self._timers = timers
        self._clock: Clock = clock or SystemClock()
        self._node_read_at = float("-inf")
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._node: NodeInfo | None = None
        self._lock = threading.Lock()

    @property
    def api(self) -> KubeApi:
        return self._api

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def connect(self, *, required: bool = False) -> bool:
        """Wait up to the connect timeout (forever when `required`, as upstream does for custom networking);
        True when connected. Either way a later outage is survived."""
        if self._probe(None if required else self._timers.connect_timeout_s):
            return True
        log.warning(
            "the Kubernetes API server did not answer within %.0f s; continuing without it and retrying every"
            " %.0f s (check CLUSTER_ENDPOINT / the kubeconfig and the network path to the server)",
            self._timers.connect_timeout_s,
            self._timers.poll_interval_s,
        )
        self._thread = threading.Thread(target=self._retry, name="kube-connect", daemon=True)
        self._thread.start()
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timers.request_timeout_s + 1.0)
            self._thread = None
        if self._connected.is_set():
            self._api.stop()

    def node(self, *, refresh: bool = False) -> NodeInfo | None:
        """This node's object (cached; `refresh` re-reads it), None while the server is unreachable."""
        if not self._connected.is_set():
            return None
        with self._lock:
            fresh = self._clock.monotonic() - self._node_read_at < self._timers.node_ttl_s
            if self._node is not None and (fresh or not refresh):
                return self._node
            self._node_read_at = self._clock.monotonic()  # also after a failure: retry only after the TTL
        try:
            node = self._api.get_node()
        except K8sApiError as err:
            log.info("reading this node from the API server failed: %s", err)
            with self._lock:
                return self._node
        with self._lock:
            self._node = node
        return node

    def eniconfig(self, *, annotation_key: str, label_key: str) -> EniConfig:
        """Custom networking: the ENIConfig this node uses (label/annotation on the node, else `default`).

        Raises `EniConfigError` with what to fix when it cannot be read.
        """
        node = self.node(refresh=True)
        if node is None:
            raise EniConfigError(
                "custom networking needs the Kubernetes API server and it is unreachable:"
                " check CLUSTER_ENDPOINT"
            )
        name = eniconfig_name_for(node, annotation_key=annotation_key, label_key=label_key)
        try:
            config = self._api.get_eniconfig(name)
        except NotFound:
            raise EniConfigError(
                f"ENIConfig {name!r} (chosen for node {node.name}) does not exist: create it, or point"
                f" the node's {label_key!r} label / {annotation_key!r} annotation at an existing one"
            ) from None
        except K8sApiError as err:
            raise EniConfigError(f"reading ENIConfig {name!r} failed: {err}") from err
        if not config.subnet:
            raise EniConfigError(f"ENIConfig {name!r} has no spec.subnet: set the subnet for pod ENIs")
        return config

    def announce_custom_networking(self, eniconfig: str) -> None:
        """CNINode `spec.features` gets `{CustomNetworking: <eniconfig>}`: how upstream tells the VPC resource
        controller. A failure is logged; pods still get addresses."""
        try:
            ensure_cninode_features(self._api, [CniNodeFeature(name=CUSTOM_NETWORKING, value=eniconfig)])
        except K8sApiError as err:
            log.warning("could not record CustomNetworking=%s on this node's CNINode: %s", eniconfig, err)

    def report_missing_permission(self, message: str) -> None:
        """Upstream's `MissingIAMPermissions` Warning event on the aws-node pod (when connected)."""
        if not self._connected.is_set():
            return
        try:
            self._api.emit_event(reason=MISSING_IAM_PERMISSIONS, message=message, type=EventType.WARNING)
        except K8sApiError as err:
            log.info("could not emit the MissingIAMPermissions event: %s", err)

    def max_pods(self) -> int | None:
        node = self.node()
        return None if node is None else node.max_pods

    def schedulable(self) -> bool:
        """False only when the node carries the unschedulable taint (unknown counts as schedulable).

        The node object is re-read at most every `node_ttl_s`."""
        node = self.node(refresh=True)
        return node is None or not node.has_unschedulable_taint

    def _probe(self, give_up_after_s: float | None) -> bool:
        version = wait_until_reachable(
            self._api,
            poll_interval_s=self._timers.poll_interval_s,
            request_timeout_s=self._timers.request_timeout_s,
            give_up_after_s=give_up_after_s,
            stop=self._stop,
        )
        if version is None:
            return False
        try:
            self._api.start()
        except K8sApiError as err:
            log.warning("starting the pod watch failed (%s); retrying", err)
            return False
        self._connected.set()
        log.info("connected to the Kubernetes API server (%s)", version)
        return True

    def _retry(self) -> None:
        while not self._stop.is_set():
            if self._probe(None):
                self.node(refresh=True)
                return


def kube_api(endpoint: KubeEndpoint, client: KubeSettings) -> KubeApi:
    """The real client (CLUSTER_ENDPOINT, in-cluster, or KUBECONFIG); raises FileNotFoundError or ValueError
    when no API server is configured."""
    if not client.node_name:
        raise ValueError("MY_NODE_NAME is not set")
    return KubernetesApi(load_config(endpoint), settings=client)
