"""What the controller needs of pods and namespaces, parsed from the watched JSON."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vpccni.netpol.model import IPAddress, Protocol

# Set on every namespace by the API server (Kubernetes >= 1.21); policies select namespaces by it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_DONE_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True, kw_only=True)
class ClusterPod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: IPAddress | None = None
    host_ip: IPAddress | None = None
    # Named container ports: (name, protocol) -> number.
    named_ports: Mapping[tuple[str, Protocol], int] = field(default_factory=dict)
    active: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def addressable(self) -> bool:
        """A peer or target with an address of its own: running, not host-network, IP assigned. A finished
        pod's address may already belong to a new pod, so it must never stay in a rule."""
        return self.active and self.ip is not None


@dataclass(frozen=True, kw_only=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


def _ip(text: Any) -> IPAddress | None:
    try:
        return ipaddress.ip_address(str(text)) if text else None
    except ValueError:
        return None


def pod_from_json(obj: Mapping[str, Any]) -> ClusterPod:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ports: dict[tuple[str, Protocol], int] = {}
    for container in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ())):
        for port in container.get("ports") or ():
            name, number = port.get("name"), port.get("containerPort")
            proto = Protocol.__members__.get(str(port.get("protocol") or "TCP").upper())
            if name and isinstance(number, int) and proto is not None:
                ports.setdefault((str(name), proto), number)
    return ClusterPod(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        ip=_ip(status.get("podIP")),
        host_ip=_ip(status.get("hostIP")),
        named_ports=ports,
        active=not spec.get("hostNetwork") and status.get("phase") not in _DONE_PHASES,
    )


def namespace_from_json(obj: Mapping[str, Any]) -> Namespace:
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.setdefault(NAMESPACE_NAME_LABEL, name)
    return Namespace(name=name, labels=labels)
