"""The discovery documents (``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<version>``) of what a registry
serves. Clients that ask for aggregated discovery get these too and fall back, as with an older server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vpccni.testbed.kube.resources import ResourceType

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def api_versions() -> dict[str, Any]:
    """``GET /api``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def api_group_list(served: Sequence[ResourceType]) -> dict[str, Any]:
    """``GET /apis``: every non-core group with its served versions (the first is preferred)."""
    groups: dict[str, list[str]] = {}
    for resource in served:
        if resource.group:
            versions = groups.setdefault(resource.group, [])
            if resource.version not in versions:
                versions.append(resource.version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": group,
                "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
            }
            for group, versions in groups.items()
        ],
    }


def api_resource_list(served: Sequence[ResourceType], group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``GET /apis/<group>/<version>``; None when the group/version is not served."""
    members = [r for r in served if (r.group, r.version) == (group, version)]
    if not members:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": members[0].api_version,
        "resources": [
            {
                "name": r.plural,
                "singularName": r.singular_name,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
                "shortNames": list(r.short_names),
                "categories": list(r.categories),
            }
            for r in members
        ],
    }
