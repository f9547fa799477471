"""Values the Kubernetes wrapper hands to ipamd: frozen, typed, independent of the client's models."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vpccni.k8sapi.names import UNSCHEDULABLE_TAINT

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


class EventType(enum.Enum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, kw_only=True)
class Taint:
    key: str
    value: str = ""
    effect: str = ""


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    name: str
    uid: str = ""
    labels: Mapping[str, str] = field(default_factory=_empty)
    annotations: Mapping[str, str] = field(default_factory=_empty)
    taints: tuple[Taint, ...] = ()
    max_pods: int | None = None  # status.capacity.pods
    unschedulable: bool = False  # spec.unschedulable (cordon)
    provider_id: str = ""
    resource_version: str = ""

    @property
    def has_unschedulable_taint(self) -> bool:
        """What upstream checks before managing ENIs (AWS_MANAGE_ENIS_NON_SCHEDULABLE)."""
        return any(t.key == UNSCHEDULABLE_TAINT for t in self.taints)


@dataclass(frozen=True, kw_only=True)
class EniConfig:
    name: str
    subnet: str
    security_groups: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PodInfo:
    namespace: str
    name: str
    uid: str = ""
    node_name: str = ""
    annotations: Mapping[str, str] = field(default_factory=_empty)
    labels: Mapping[str, str] = field(default_factory=_empty)
    host_network: bool = False
    phase: str = ""
    pod_ips: tuple[IPAddress, ...] = ()
    requests_pod_eni: bool = False  # a container limits vpc.amazonaws.com/pod-eni
    deleting: bool = False  # metadata.deletionTimestamp is set
    resource_version: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, kw_only=True)
class CniNodeFeature:
    """One entry of ``CNINode.spec.features``; ``value`` is omitted from the JSON when empty."""

    name: str
    value: str = ""


@dataclass(frozen=True, kw_only=True)
class CniNode:
    name: str
    features: tuple[CniNodeFeature, ...] = ()
    resource_version: str = ""


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    major: str
    minor: str
    git_version: str
