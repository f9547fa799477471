"""The OpenAPI v2 document: what kubectl's parser needs (one type per schema, items on arrays, refs that
resolve, the group-version-kind of every served type) and its protobuf form."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from vpccni.testbed.kube import CRDS, DAEMONSETS, KubeApiServer
from vpccni.testbed.kube import openapi_pb as pb
from vpccni.testbed.kube.bootstrap import CNINODE_CRD
from vpccni.testbed.kube.crds import openapi_schema, resource_types
from vpccni.testbed.kube.openapi import builtin_definitions, definition_name, document, to_swagger
from vpccni.testbed.kube.registry import ResourceRegistry


def _walk(schema: dict[str, Any], refs: set[str]) -> None:
    assert not {"oneOf", "anyOf", "allOf", "nullable"} & schema.keys()
    if "$ref" in schema:
        refs.add(schema["$ref"].removeprefix("#/definitions/"))
        return
    assert isinstance(schema.get("type", ""), str)
    if schema.get("type") == "array":
        _walk(schema["items"], refs)
    for sub in (schema.get("properties") or {}).values():
        _walk(sub, refs)
    if isinstance(schema.get("additionalProperties"), dict):
        _walk(schema["additionalProperties"], refs)


def test_builtin_definitions_are_swagger_2_that_kubectl_parses() -> None:
    definitions = builtin_definitions()
    refs: set[str] = set()
    for schema in definitions.values():
        _walk(schema, refs)
    assert refs <= definitions.keys()
    daemonset = definitions["io.k8s.api.apps.v1.DaemonSet"]
    assert daemonset["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "DaemonSet", "version": "v1"}
    ]
    containers = definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {
        "type": "string",
        "format": "int-or-string",
    }


def test_crd_schemas_as_the_real_server_publishes_them() -> None:
    assert to_swagger(
        {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}}
    ) == {"x-kubernetes-preserve-unknown-fields": True}
    assert to_swagger(
        {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    ) == {
        "type": "string",
        "format": "int-or-string",
    }
    registry = ResourceRegistry()
    (cninode,) = resource_types(CNINODE_CRD)
    doc = document(registry.served(), {cninode.key: openapi_schema(CNINODE_CRD, "v1alpha1")})
    published = doc["definitions"][definition_name(cninode)]
    assert definition_name(cninode) == "aws.k8s.vpcresources.v1alpha1.CNINode"
    assert published["properties"]["spec"]["properties"]["features"]["items"]["type"] == "object"
    assert published["x-kubernetes-group-version-kind"] == [
        {"group": "vpcresources.k8s.aws", "version": "v1alpha1", "kind": "CNINode"}
    ]
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == DAEMONSETS.kind
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    assert "fieldValidation" not in {p["name"] for p in patch["parameters"]}
    cr_patch = doc["paths"]["/apis/vpcresources.k8s.aws/v1alpha1/cninodes/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in cr_patch["consumes"]


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """A protobuf wire-format reader: (field, wire type, value or raw bytes)."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if not byte & 0x80:
                return value, pos

    out, pos = [], 0
    while pos < len(data):
        key, pos = varint(pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(pos)
            out.append((field, wire, value))
        elif wire == 2:
            length, pos = varint(pos)
            out.append((field, wire, data[pos : pos + length]))
            pos += length
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def test_protobuf_document_carries_definitions_and_extensions() -> None:
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.31.0"},
        "paths": {},
        "definitions": {
            "x.v1.Thing": {
                "type": "object",
                "required": ["spec"],
                "properties": {"spec": {"type": "array", "items": {"$ref": "#/definitions/y"}}},
                "x-kubernetes-group-version-kind": [{"group": "x", "version": "v1", "kind": "Thing"}],
            }
        },
    }
    top = _fields(pb.document(doc))
    assert (top[0][0], top[0][2]) == (1, b"2.0")
    (named,) = [_fields(v) for f, _, v in top if f == 9]
    name, value = _fields(named[0][2])
    assert name == (1, 2, b"x.v1.Thing")
    schema = {f: v for f, _, v in _fields(value[2])}
    assert schema[19] == b"spec" and _fields(schema[22]) == [(1, 2, b"object")]
    extension = _fields(schema[31])
    assert extension[0][2] == b"x-kubernetes-group-version-kind"
    assert b'"kind": "Thing"' in _fields(extension[1][2])[0][2]


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer() as srv:
        yield srv


def test_served_as_protobuf_to_kubectl_and_json_to_others(server: KubeApiServer) -> None:
    request = urllib.request.Request(
        f"{server.url}/openapi/v2",
        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
    )
    with urllib.request.urlopen(request) as resp:
        assert resp.headers["Content-Type"] == pb.CONTENT_TYPES[1]
        assert _fields(resp.read())[0] == (1, 2, b"2.0")
    with urllib.request.urlopen(f"{server.url}/openapi/v2") as resp:
        assert resp.headers["Content-Type"] == "application/json"
    server.store.delete(CRDS, "cninodes.vpcresources.k8s.aws")
    with urllib.request.urlopen(f"{server.url}/openapi/v2") as resp:
        assert b"aws.k8s.vpcresources.v1alpha1.CNINode" in resp.read()  # the built-in CNINode type stays
