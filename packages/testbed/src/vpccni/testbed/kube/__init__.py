"""The testbed's Kubernetes API server: the real REST protocol (JSON over HTTP, list/watch/get/patch) for
the built-in catalogue of ``resources.py`` and every CRD's custom resources, with discovery, server-side
tables and the OpenAPI v2 document, driven by the official ``kubernetes`` client and by ``kubectl``."""

from vpccni.testbed.kube.registry import ResourceRegistry
from vpccni.testbed.kube.resources import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    CNINODES,
    CONFIGMAPS,
    CRDS,
    DAEMONSETS,
    DEPLOYMENTS,
    ENICONFIGS,
    EVENTS,
    EVENTS_V1,
    NAMESPACES,
    NODES,
    PODS,
    ROLEBINDINGS,
    ROLES,
    SECURITYGROUPPOLICIES,
    SERVICEACCOUNTS,
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
    "CLUSTERROLEBINDINGS",
    "CLUSTERROLES",
    "CNINODES",
    "CONFIGMAPS",
    "CRDS",
    "DAEMONSETS",
    "DEPLOYMENTS",
    "ENICONFIGS",
    "EVENTS",
    "EVENTS_V1",
    "NAMESPACES",
    "NODES",
    "PODS",
    "ROLEBINDINGS",
    "ROLES",
    "SECURITYGROUPPOLICIES",
    "SERVICEACCOUNTS",
    "ConflictError",
    "ExpiredError",
    "KubeApiServer",
    "NotFoundError",
    "ObjectStore",
    "ResourceRegistry",
    "ResourceType",
    "StoreError",
]
