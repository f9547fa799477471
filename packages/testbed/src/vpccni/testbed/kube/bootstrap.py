"""What an EKS cluster's API server holds before anyone applies anything: the four system namespaces, and
the CRDs of the custom resources the VPC CNI uses (CNINode and SecurityGroupPolicy from the control plane's
VPC resource controller, ENIConfig from the VPC CNI add-on), so `kubectl get crd` and re-applying the
manifest behave as there."""

from __future__ import annotations

from typing import Any

from vpccni.testbed.kube.resources import (
    CNINODES,
    CRDS,
    ENICONFIGS,
    NAMESPACES,
    SECURITYGROUPPOLICIES,
    ResourceType,
)
from vpccni.testbed.kube.store import ObjectStore

SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")

_OPEN_OBJECT: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

ENICONFIG_CRD: dict[str, Any] = {
    "metadata": {"name": f"{ENICONFIGS.plural}.{ENICONFIGS.group}"},
    "spec": {
        "group": ENICONFIGS.group,
        "scope": "Cluster",
        "names": {"plural": ENICONFIGS.plural, "singular": "eniconfig", "kind": ENICONFIGS.kind},
        "versions": [
            {
                "name": ENICONFIGS.version,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": _OPEN_OBJECT},
            }
        ],
    },
}


def _controller_crd(
    res: ResourceType,
    *,
    singular: str,
    column: dict[str, str],
    spec: dict[str, Any],
    status: bool,
) -> dict[str, Any]:
    """A CRD of the VPC resource controller's (one version, one printer column, a typed spec)."""
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": spec},
    }
    version: dict[str, Any] = {"name": res.version, "served": True, "storage": True}
    if status:
        properties["status"] = _OPEN_OBJECT
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = [{"type": "string", **column}]
    version["schema"] = {"openAPIV3Schema": {"type": "object", "properties": properties}}
    return {
        "metadata": {"name": f"{res.plural}.{res.group}"},
        "spec": {
            "group": res.group,
            "scope": "Namespaced" if res.namespaced else "Cluster",
            "names": {
                "plural": res.plural,
                "singular": singular,
                "kind": res.kind,
                "listKind": res.list_kind,
                "shortNames": list(res.short_names),
            },
            "versions": [version],
        },
    }


CNINODE_CRD = _controller_crd(
    CNINODES,
    singular="cninode",
    column={
        "name": "Features",
        "jsonPath": ".spec.features",
        "description": "The features delegated to VPC resource controller",
    },
    spec={
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "managedBy": {"type": "string"},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    status=True,
)

_LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-map-type": "atomic",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

SECURITYGROUPPOLICY_CRD = _controller_crd(
    SECURITYGROUPPOLICIES,
    singular="securitygrouppolicy",
    column={
        "name": "Security-Group-Ids",
        "jsonPath": ".spec.securityGroups.groupIds",
        "description": "The security group IDs to apply to the elastic network interface of pods that match "
        "this policy",
    },
    spec={
        "podSelector": _LABEL_SELECTOR,
        "serviceAccountSelector": _LABEL_SELECTOR,
        "securityGroups": {
            "type": "object",
            "properties": {
                "groupIds": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 16}
            },
        },
    },
    status=False,
)


def bootstrap(store: ObjectStore) -> None:
    for name in SYSTEM_NAMESPACES:
        store.create(
            NAMESPACES,
            {
                "metadata": {"name": name},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )
    for crd in (CNINODE_CRD, ENICONFIG_CRD, SECURITYGROUPPOLICY_CRD):
        store.create(CRDS, crd)
