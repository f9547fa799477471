"""vpccni.k8sapi: Kubernetes API access for the VPC CNI (node, pods, ENIConfig, CNINode, events).

ipamd depends on the ``KubeApi`` protocol; ``KubernetesApi`` is the real adapter over the official client
(``load_config`` builds its configuration), ``vpccni.k8sapi.testing.FakeKubeApi`` the in-memory fake."""

from vpccni.k8sapi.backoff import ReconnectBackoff
from vpccni.k8sapi.client import KubernetesApi
from vpccni.k8sapi.cninode import ensure_cninode_features, merged_features
from vpccni.k8sapi.config import KubeEndpoint, KubeSettings, load_config
from vpccni.k8sapi.eniconfig import eniconfig_name_for
from vpccni.k8sapi.errors import ApiUnavailable, Conflict, Expired, Forbidden, K8sApiError, NotFound
from vpccni.k8sapi.model import (
    CniNode,
    CniNodeFeature,
    EniConfig,
    EventType,
    NodeInfo,
    PodInfo,
    Taint,
    VersionInfo,
)
from vpccni.k8sapi.podcache import PodCache
from vpccni.k8sapi.probe import wait_until_reachable
from vpccni.k8sapi.protocol import KubeApi

__all__ = [
    "ApiUnavailable",
    "CniNode",
    "CniNodeFeature",
    "Conflict",
    "EniConfig",
    "EventType",
    "Expired",
    "Forbidden",
    "K8sApiError",
    "KubeApi",
    "KubeEndpoint",
    "KubeSettings",
    "KubernetesApi",
    "NodeInfo",
    "NotFound",
    "PodCache",
    "PodInfo",
    "ReconnectBackoff",
    "Taint",
    "VersionInfo",
    "eniconfig_name_for",
    "ensure_cninode_features",
    "load_config",
    "merged_features",
    "wait_until_reachable",
]
