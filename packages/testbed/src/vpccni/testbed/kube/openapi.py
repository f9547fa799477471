"""``GET /openapi/v2``: the Swagger 2.0 document kubectl validates manifests against and reads patch
strategies from (``kubectl apply``, ``kubectl explain``).

The built-in definitions are the real Kubernetes ones of the release this server reports (shipped as JSON
schema by the ``kubernetes-validate`` package, turned back into Swagger 2.0 here); custom resources get their
CRD's schema, as the real server publishes it. kubectl asks for the document as protobuf (``openapi_pb``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from importlib import resources as importlib_resources
from typing import Any

from vpccni.testbed.kube.resources import VERSION_INFO, ResourceType

Schema = dict[str, Any]
_DROPPED = {"enum", "default", "oneOf", "anyOf", "allOf", "not", "nullable", "$schema", "$id", "$defs"}


def to_swagger(schema: Mapping[str, Any], *, ref_prefix: str = "#/$defs/") -> Schema:
    """A JSON schema (or a CRD's OpenAPI v3 schema) as a Swagger 2.0 schema: one type, no combinators, refs
    into ``#/definitions/``. ``x-kubernetes-int-or-string`` and the int-or-string union become Kubernetes'
    ``string``/``int-or-string``; ``x-kubernetes-preserve-unknown-fields`` drops the structure under it, as
    the real server publishes it (so kubectl lets unknown fields through)."""
    out: Schema = {}
    if schema.get("x-kubernetes-int-or-string") or _is_int_or_string(schema):
        return {"type": "string", "format": "int-or-string", **_described(schema)}
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return {**_described(schema), "x-kubernetes-preserve-unknown-fields": True}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key == "$ref":
            out[key] = "#/definitions/" + str(value).removeprefix(ref_prefix)
        elif key == "type":
            types = [t for t in (value if isinstance(value, list) else [value]) if t != "null"]
            if len(types) == 1:
                out[key] = types[0]
        elif key == "properties":
            out[key] = {name: to_swagger(sub, ref_prefix=ref_prefix) for name, sub in value.items()}
        elif key == "items" and isinstance(value, Mapping):
            out[key] = to_swagger(value, ref_prefix=ref_prefix)
        elif key == "additionalProperties":
            out[key] = to_swagger(value, ref_prefix=ref_prefix) if isinstance(value, Mapping) else bool(value)
        elif key in ("description", "format", "required", "title") or key.startswith("x-kubernetes-"):
            out[key] = value
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {}  # Swagger 2.0 requires items; kubectl rejects an array without one
    if "$ref" in out:  # Swagger 2.0 ignores siblings of $ref; keep only what kubectl reads
        return {k: v for k, v in out.items() if k in ("$ref", "description")}
    return out


def _is_int_or_string(schema: Mapping[str, Any]) -> bool:
    choices = schema.get("oneOf") or schema.get("anyOf") or []
    kinds = {
        t for c in choices for t in (c.get("type") if isinstance(c.get("type"), list) else [c.get("type")])
    }
    return {"string", "integer"} <= kinds


def _described(schema: Mapping[str, Any]) -> Schema:
    return {"description": schema["description"]} if "description" in schema else {}


@functools.cache
def builtin_definitions() -> dict[str, Schema]:
    """The release's built-in definitions (``io.k8s.api.apps.v1.DaemonSet`` ...), converted once."""
    major, minor = VERSION_INFO["major"], VERSION_INFO["minor"]
    path = importlib_resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{major}.{minor}.0-local/_definitions.json"
    )
    raw = json.loads(path.read_text())["$defs"]
    return {name: to_swagger(schema) for name, schema in raw.items()}


def definition_name(resource: ResourceType) -> str:
    """The real server's name for a custom resource's definition: the group reversed, version, kind
    (``aws.k8s.vpcresources.v1alpha1.CNINode``)."""
    return ".".join([*reversed(resource.group.split(".")), resource.version, resource.kind])


def custom_definition(resource: ResourceType, schema: Mapping[str, Any] | None) -> Schema:
    """A custom type's definition; one whose schema keeps unknown fields at the root is an open object."""
    body = to_swagger(schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    gvk = {"x-kubernetes-group-version-kind": [_gvk(resource)]}
    if body.pop("x-kubernetes-preserve-unknown-fields", False):
        return {**body, "type": "object", **gvk}
    properties = {
        **(body.get("properties") or {}),
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
    }
    return {**body, "type": "object", "properties": properties, **gvk}


def _gvk(resource: ResourceType) -> dict[str, str]:
    return {"group": resource.group, "version": resource.version, "kind": resource.kind}


def _paths(served: Iterable[ResourceType], definitions: Mapping[str, Schema]) -> dict[str, Any]:
    """One item per object URL, with get and patch: kubectl finds a type's PATCH parameters here (and sees
    no ``fieldValidation``, so it validates on the client, against ``definitions``)."""
    by_gvk = {
        (g["group"], g["version"], g["kind"]): name
        for name, schema in definitions.items()
        for g in schema.get("x-kubernetes-group-version-kind") or []
    }
    paths: dict[str, Any] = {}
    for resource in served:
        name = by_gvk.get((resource.group, resource.version, resource.kind))
        if name is None:
            continue
        root = f"/api/{resource.version}" if not resource.group else f"/apis/{resource.api_version}"
        namespace = "/namespaces/{namespace}" if resource.namespaced else ""
        url = f"{root}{namespace}/{resource.plural}/{{name}}"
        extensions = {"x-kubernetes-group-version-kind": _gvk(resource)}
        ok = {"200": {"description": "OK", "schema": {"$ref": f"#/definitions/{name}"}}}
        body = {"name": "body", "in": "body", "required": True, "schema": {"type": "object"}}
        paths[url] = {
            "get": {
                "operationId": f"read{resource.kind}",
                "responses": ok,
                "x-kubernetes-action": "get",
                **extensions,
            },
            "patch": {
                "operationId": f"patch{resource.kind}",
                "consumes": ["application/json-patch+json", "application/merge-patch+json"]
                + ([] if resource.custom else ["application/strategic-merge-patch+json"]),
                "parameters": [body, {"name": "fieldManager", "in": "query", "type": "string"}],
                "responses": ok,
                "x-kubernetes-action": "patch",
                **extensions,
            },
        }
    return paths


def document(served: Iterable[ResourceType], crd_schemas: Mapping[str, Mapping[str, Any] | None]) -> Schema:
    """The whole document: the built-in definitions, one per served custom type (``crd_schemas`` by
    resource key), and the paths of every served type."""
    served = list(served)
    definitions = dict(builtin_definitions())
    for resource in served:
        if resource.custom:
            definitions[definition_name(resource)] = custom_definition(
                resource, crd_schemas.get(resource.key)
            )
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": VERSION_INFO["gitVersion"]},
        "paths": _paths(served, definitions),
        "definitions": definitions,
    }
