"""What an EKS cluster's API server holds before anyone applies anything: the four system namespaces, and
the CRDs of the custom resources the VPC CNI uses (CNINode from the control plane's VPC resource controller,
ENIConfig from the VPC CNI add-on), so `kubectl get crd` and re-applying the manifest behave as there."""

from __future__ import annotations

from typing import Any

from vpccni.testbed.kube.resources import CNINODES, CRDS, ENICONFIGS, NAMESPACES
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

CNINODE_CRD: dict[str, Any] = {
    "metadata": {"name": f"{CNINODES.plural}.{CNINODES.group}"},
    "spec": {
        "group": CNINODES.group,
        "scope": "Cluster",
        "names": {
            "plural": CNINODES.plural,
            "singular": "cninode",
            "kind": CNINODES.kind,
            "listKind": CNINODES.list_kind,
            "shortNames": list(CNINODES.short_names),
        },
        "versions": [
            {
                "name": CNINODES.version,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {
                        "name": "Features",
                        "type": "string",
                        "jsonPath": ".spec.features",
                        "description": "The features delegated to VPC resource controller",
                    }
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "features": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "name": {"type": "string"},
                                                "value": {"type": "string"},
                                            },
                                        },
                                    },
                                    "managedBy": {"type": "string"},
                                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                                },
                            },
                            "status": _OPEN_OBJECT,
                        },
                    }
                },
            }
        ],
    },
}


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
    for crd in (CNINODE_CRD, ENICONFIG_CRD):
        store.create(CRDS, crd)
