"""The seam between ipamd and Kubernetes: what ipamd needs, nothing more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from vpccni.k8sapi.model import CniNode, CniNodeFeature, EniConfig, EventType, NodeInfo, VersionInfo
from vpccni.k8sapi.podcache import PodCache


class KubeApi(Protocol):
    """Every call raises ``ApiUnavailable`` when the API server cannot be reached, ``NotFound`` for a
    missing object, ``Conflict`` on an optimistic-lock failure and ``Forbidden`` for missing RBAC."""

    @property
    def pods(self) -> PodCache:
        """Pods on this node, kept current in the background between ``start()`` and ``stop()``."""
        ...

    def start(self) -> None:
        """Start keeping ``pods`` current (list + watch; survives API-server outages)."""
        ...

    def stop(self) -> None: ...

    def server_version(self, *, timeout_s: float = 5.0) -> VersionInfo:
        """``GET /version``: the connectivity probe."""
        ...

    def get_node(self) -> NodeInfo:
        """This node (MY_NODE_NAME)."""
        ...

    def get_eniconfig(self, name: str) -> EniConfig: ...

    def get_cninode(self) -> CniNode:
        """``CNINode/<this node>``."""
        ...

    def create_cninode(self, features: Sequence[CniNodeFeature]) -> CniNode: ...

    def patch_cninode_features(self, features: Sequence[CniNodeFeature], *, resource_version: str) -> CniNode:
        """Merge-patch ``spec.features`` to exactly ``features``, only if the object is still at
        ``resource_version`` (else ``Conflict``)."""
        ...

    def emit_event(self, *, reason: str, message: str, type: EventType = EventType.WARNING) -> None:
        """A core/v1 Event on this aws-node pod (MY_POD_NAME); a no-op when the pod name is unknown."""
        ...

    def annotate_pod(
        self, *, namespace: str, name: str, annotations: Mapping[str, str | None], resource_version: str = ""
    ) -> None:
        """Merge-patch pod annotations (``None`` removes a key); with ``resource_version``, only if the pod
        is still at it."""
        ...
