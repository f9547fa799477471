"""The testbed's Kubernetes API server: the real REST protocol (JSON over HTTP, list/watch/get/patch)
for nodes, pods, events, ENIConfigs and CNINodes, driven by the official ``kubernetes`` client."""

from vpccni.testbed.kube.resources import (
    CNINODES,
    ENICONFIGS,
    EVENTS,
    EVENTS_V1,
    NAMESPACES,
    NODES,
    PODS,
    ResourceType,
)
from vpccni.testbed.kube.server import KubeApiServer
from vpccni.testbed.kube.store import (
    ConflictError,
    ExpiredError,
    NotFoundError,
    ObjectStore,
    StoreError,
)

__all__ = [
    "CNINODES",
    "ENICONFIGS",
    "EVENTS",
    "EVENTS_V1",
    "NAMESPACES",
    "NODES",
    "PODS",
    "ConflictError",
    "ExpiredError",
    "KubeApiServer",
    "NotFoundError",
    "ObjectStore",
    "ResourceType",
    "StoreError",
]
