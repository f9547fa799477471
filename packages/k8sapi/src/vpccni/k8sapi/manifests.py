"""Raw (JSON-shaped) Kubernetes objects to and from the wrapper's values. Parsing is lenient: a missing
field reads as empty, as the API server omits empty fields."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from vpccni.k8sapi.model import (
    CniNode,
    CniNodeFeature,
    EniConfig,
    EventType,
    IPAddress,
    NodeInfo,
    PodInfo,
    Taint,
    VersionInfo,
)
from vpccni.k8sapi.names import (
    CNINODE_GROUP,
    CNINODE_VERSION,
    EVENT_COMPONENT,
    POD_ENI_RESOURCE,
)

log = logging.getLogger(__name__)
Raw = Mapping[str, Any]


def _strings(value: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in (value or {}).items()})


def _meta(obj: Raw) -> Raw:
    return obj.get("metadata") or {}


def _quantity(value: Any) -> int | None:
    """``pods`` capacity is a plain integer quantity ("110")."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def node_from_manifest(obj: Raw) -> NodeInfo:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    return NodeInfo(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        labels=_strings(meta.get("labels")),
        annotations=_strings(meta.get("annotations")),
        taints=tuple(
            Taint(key=t.get("key", ""), value=t.get("value") or "", effect=t.get("effect") or "")
            for t in spec.get("taints") or ()
        ),
        max_pods=_quantity((status.get("capacity") or {}).get("pods")),
        unschedulable=bool(spec.get("unschedulable")),
        provider_id=spec.get("providerID") or "",
        resource_version=meta.get("resourceVersion", ""),
    )


def _pod_ips(status: Raw) -> tuple[IPAddress, ...]:
    texts = [p.get("ip") for p in status.get("podIPs") or ()] or [status.get("podIP")]
    ips = []
    for text in texts:
        if text:
            try:
                ips.append(ipaddress.ip_address(text))
            except ValueError:
                log.warning("ignoring malformed pod IP %r", text)
    return tuple(ips)


def _requests_pod_eni(spec: Raw) -> bool:
    for container in spec.get("containers") or ():
        if POD_ENI_RESOURCE in ((container.get("resources") or {}).get("limits") or {}):
            return True
    return False


def pod_from_manifest(obj: Raw) -> PodInfo:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    return PodInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        node_name=spec.get("nodeName") or "",
        annotations=_strings(meta.get("annotations")),
        labels=_strings(meta.get("labels")),
        host_network=bool(spec.get("hostNetwork")),
        phase=status.get("phase") or "",
        pod_ips=_pod_ips(status),
        requests_pod_eni=_requests_pod_eni(spec),
        deleting=bool(meta.get("deletionTimestamp")),
        resource_version=meta.get("resourceVersion", ""),
    )


def eniconfig_from_manifest(obj: Raw) -> EniConfig:
    spec = obj.get("spec") or {}
    return EniConfig(
        name=_meta(obj).get("name", ""),
        subnet=spec.get("subnet") or "",
        security_groups=tuple(spec.get("securityGroups") or ()),
    )


def cninode_from_manifest(obj: Raw) -> CniNode:
    return CniNode(
        name=_meta(obj).get("name", ""),
        features=tuple(
            CniNodeFeature(name=f.get("name", ""), value=f.get("value") or "")
            for f in (obj.get("spec") or {}).get("features") or ()
        ),
        resource_version=_meta(obj).get("resourceVersion", ""),
    )


def features_manifest(features: Sequence[CniNodeFeature]) -> list[dict[str, str]]:
    return [{"name": f.name, **({"value": f.value} if f.value else {})} for f in features]


def cninode_manifest(name: str, features: Sequence[CniNodeFeature]) -> dict[str, Any]:
    return {
        "apiVersion": f"{CNINODE_GROUP}/{CNINODE_VERSION}",
        "kind": "CNINode",
        "metadata": {"name": name},
        "spec": {"features": features_manifest(features)},
    }


def version_from_manifest(obj: Raw) -> VersionInfo:
    return VersionInfo(
        major=str(obj.get("major", "")),
        minor=str(obj.get("minor", "")),
        git_version=str(obj.get("gitVersion", "")),
    )


def event_manifest(
    *,
    pod_namespace: str,
    pod_name: str,
    pod_uid: str,
    node_name: str,
    reason: str,
    message: str,
    type: EventType,
    now: datetime.datetime,
) -> dict[str, Any]:
    """A core/v1 Event about the aws-node pod, as client-go's event recorder writes one."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {"kind": "Pod", "apiVersion": "v1", "namespace": pod_namespace, "name": pod_name}
    if pod_uid:
        involved["uid"] = pod_uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{pod_name}.", "namespace": pod_namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": type.value,
        "source": {"component": EVENT_COMPONENT, "host": node_name},
        "reportingComponent": EVENT_COMPONENT,
        "reportingInstance": node_name,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
