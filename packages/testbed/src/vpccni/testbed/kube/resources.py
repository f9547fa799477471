"""The resource types the testbed API server serves, and the discovery documents derived from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ResourceType:
    """One REST resource: where it lives in the URL space and what its objects are called."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def key(self) -> str:
        """A stable identifier, e.g. ``v1/pods`` or ``vpcresources.k8s.aws/v1alpha1/cninodes``."""
        return f"{self.api_version}/{self.plural}"


NODES = ResourceType(group="", version="v1", plural="nodes", kind="Node", namespaced=False)
PODS = ResourceType(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
NAMESPACES = ResourceType(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False)
EVENTS = ResourceType(group="", version="v1", plural="events", kind="Event", namespaced=True)
EVENTS_V1 = ResourceType(group="events.k8s.io", version="v1", plural="events", kind="Event", namespaced=True)
ENICONFIGS = ResourceType(
    group="crd.k8s.amazonaws.com", version="v1alpha1", plural="eniconfigs", kind="ENIConfig", namespaced=False
)
CNINODES = ResourceType(
    group="vpcresources.k8s.aws",
    version="v1alpha1",
    plural="cninodes",
    kind="CNINode",
    namespaced=False,
    short_names=("cnd",),
)

ALL_RESOURCES: tuple[ResourceType, ...] = (NODES, PODS, NAMESPACES, EVENTS, EVENTS_V1, ENICONFIGS, CNINODES)

_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def find_resource(group: str, version: str, plural: str) -> ResourceType | None:
    for resource in ALL_RESOURCES:
        if (resource.group, resource.version, resource.plural) == (group, version, plural):
            return resource
    return None


def api_versions() -> dict[str, Any]:
    """``GET /api``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def api_group_list() -> dict[str, Any]:
    """``GET /apis``: every non-core group with its single served version."""
    groups: dict[str, str] = {}
    for resource in ALL_RESOURCES:
        if resource.group:
            groups.setdefault(resource.group, resource.version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": group,
                "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
            }
            for group, version in groups.items()
        ],
    }


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``GET /apis/<group>/<version>``; None when the group/version is not served."""
    members = [r for r in ALL_RESOURCES if (r.group, r.version) == (group, version)]
    if not members:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": members[0].api_version,
        "resources": [
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": _VERBS,
                "shortNames": list(r.short_names),
            }
            for r in members
        ],
    }


VERSION_INFO: dict[str, str] = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-vpccni-testbed",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}
