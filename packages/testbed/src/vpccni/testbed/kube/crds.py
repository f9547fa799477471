"""CustomResourceDefinitions (``apiextensions.k8s.io/v1``): what a CRD object makes the server serve.

Each served version becomes a ``ResourceType`` (objects of different versions are stored apart: the testbed
does no conversion), printed with NAME and the version's ``additionalPrinterColumns`` (AGE when it names
none), as the real server prints custom resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vpccni.testbed.kube import tables
from vpccni.testbed.kube.resources import ResourceType

SCOPES = {"Namespaced": True, "Cluster": False}


class InvalidCrd(ValueError):
    """The CRD cannot be served; the message names the field, as the real server's 422 does."""


def resource_types(crd: Mapping[str, Any]) -> tuple[ResourceType, ...]:
    """The types a CRD serves; raises InvalidCrd."""
    name = str((crd.get("metadata") or {}).get("name", ""))
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = str(spec.get("group", "")), str(names.get("plural", "")), str(names.get("kind", ""))

    def invalid(field: str, value: Any, why: str) -> InvalidCrd:
        return InvalidCrd(
            f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: {field}: '
            f"Invalid value: {value!r}: {why}"
        )

    if not group or not plural or not kind:
        raise invalid(
            "spec", {"group": group, "names": names}, "spec.group, names.plural and names.kind are required"
        )
    if name != f"{plural}.{group}":
        raise invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    scope = spec.get("scope", "")
    if scope not in SCOPES:
        raise invalid("spec.scope", scope, "must be Namespaced or Cluster")
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    if not versions:
        raise invalid("spec.versions", spec.get("versions"), "must serve at least one version")
    if sum(1 for v in spec.get("versions") or [] if v.get("storage")) != 1:
        raise invalid(
            "spec.versions", [v.get("name") for v in spec["versions"]], "exactly one must be storage"
        )
    types = []
    for version in versions:
        try:
            columns = tuple(
                tables.json_path_column(
                    name=str(c["name"]),
                    json_path=str(c["jsonPath"]),
                    type=str(c.get("type", "string")),
                    format=str(c.get("format", "")),
                    description=str(c.get("description", "")),
                    priority=int(c.get("priority", 0)),
                )
                for c in version.get("additionalPrinterColumns") or []
            )
        except (KeyError, ValueError) as exc:
            raise invalid(
                f"spec.versions[{version.get('name')}].additionalPrinterColumns", str(exc), "invalid"
            ) from exc
        types.append(
            ResourceType(
                group=group,
                version=str(version.get("name", "")),
                plural=plural,
                kind=kind,
                namespaced=SCOPES[scope],
                short_names=tuple(names.get("shortNames") or ()),
                singular=str(names.get("singular", "")),
                categories=tuple(names.get("categories") or ()),
                columns=(tables.NAME, *columns) if columns else (tables.NAME, tables.AGE_DATE),
                custom=True,
            )
        )
    return tuple(types)


def accepted_status(crd: Mapping[str, Any], *, now: str) -> dict[str, Any]:
    """The status a real server gives a CRD it serves (``kubectl wait --for=condition=established``)."""
    spec = crd.get("spec") or {}
    conditions = [
        {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": now}
        for t, r, m in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        )
    ]
    return {
        "acceptedNames": dict(spec.get("names") or {}),
        "conditions": conditions,
        "storedVersions": [v.get("name") for v in spec.get("versions") or [] if v.get("storage")],
    }


def openapi_schema(crd: Mapping[str, Any], version: str) -> Mapping[str, Any] | None:
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            return ((v.get("schema") or {}).get("openAPIV3Schema")) or None
    return None
