"""The OpenAPI v2 document in protobuf, as kubectl asks for it (``Accept:
application/com.github.proto-openapi.spec.v2@v1.0+protobuf``): the ``openapi.v2.Document`` message of
gnostic's ``OpenAPIv2.proto``, written with the field numbers of that file (they are the contract).

Only what ``openapi.document`` produces is encoded: info, paths with get/patch operations, and schemas
(``$ref``, type, format, description, required, properties, items, additionalProperties, vendor extensions,
whose values travel as YAML text; JSON is YAML).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# What clients ask for (older kubectl with "@", as gnostic named it); the answer's Content-Type is always the
# second, which Go's mime parser accepts.
CONTENT_TYPES = (
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _string(field: int, value: str) -> bytes:
    return _bytes(field, value.encode()) if value else b""


def _bool(field: int, value: bool) -> bytes:
    return _varint(field << 3) + b"\x01" if value else b""


def _strings(field: int, values: Iterable[str]) -> bytes:
    return b"".join(_bytes(field, v.encode()) for v in values)


def _vendor_extensions(field: int, obj: Mapping[str, Any]) -> bytes:
    """``repeated NamedAny``: NamedAny{name=1, value=2: Any{yaml=2}}."""
    return b"".join(
        _bytes(field, _string(1, key) + _bytes(2, _string(2, json.dumps(value))))
        for key, value in obj.items()
        if key.startswith("x-")
    )


def schema(s: Mapping[str, Any]) -> bytes:
    """``Schema``: _ref=1, format=2, title=3, description=4, required=19, additional_properties=21,
    type=22, items=23, properties=25, vendor_extension=31."""
    out = _string(1, s.get("$ref", "")) + _string(2, s.get("format", "")) + _string(3, s.get("title", ""))
    out += _string(4, s.get("description", "")) + _strings(19, s.get("required") or [])
    extra = s.get("additionalProperties")
    if isinstance(extra, Mapping):
        out += _bytes(21, _bytes(1, schema(extra)))  # AdditionalPropertiesItem{schema=1}
    elif isinstance(extra, bool):
        out += _bytes(21, _varint(2 << 3) + (b"\x01" if extra else b"\x00"))  # {boolean=2}
    if s.get("type"):
        out += _bytes(22, _strings(1, [s["type"]]))  # TypeItem{value=1}
    if isinstance(s.get("items"), Mapping):
        out += _bytes(23, _bytes(1, schema(s["items"])))  # ItemsItem{schema=1}
    if s.get("properties"):
        named = b"".join(_bytes(1, _string(1, k) + _bytes(2, schema(v))) for k, v in s["properties"].items())
        out += _bytes(25, named)  # Properties{additional_properties=1: NamedSchema{name=1, value=2}}
    return out + _vendor_extensions(31, s)


def _parameter(p: Mapping[str, Any]) -> bytes:
    """``ParametersItem{parameter=1: Parameter{body_parameter=1 | non_body_parameter=2}}``."""
    if p.get("in") == "body":
        body = _string(2, p["name"]) + _string(3, "body") + _bool(4, bool(p.get("required")))
        body += _bytes(5, schema(p.get("schema") or {}))
        return _bytes(1, _bytes(1, body))
    query = _bool(1, bool(p.get("required"))) + _string(2, p.get("in", "query")) + _string(4, p["name"])
    query += _string(6, p.get("type", "string"))
    # NonBodyParameter{query_parameter_sub_schema=3}
    return _bytes(1, _bytes(2, _bytes(3, query)))


def _operation(op: Mapping[str, Any]) -> bytes:
    """``Operation``: operation_id=5, consumes=7, parameters=8, responses=9, vendor_extension=13."""
    out = _string(5, op.get("operationId", "")) + _strings(7, op.get("consumes") or [])
    out += b"".join(_bytes(8, _parameter(p)) for p in op.get("parameters") or [])
    codes = b""
    for code, response in (op.get("responses") or {}).items():
        answer = _string(1, response.get("description", ""))
        if "schema" in response:
            answer += _bytes(2, _bytes(1, schema(response["schema"])))  # SchemaItem{schema=1}
        # NamedResponseValue{name=1, value=2: ResponseValue{response=1}}
        codes += _bytes(1, _string(1, code) + _bytes(2, _bytes(1, answer)))
    out += _bytes(9, codes)
    return out + _vendor_extensions(13, op)


_OPERATIONS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


def document(doc: Mapping[str, Any]) -> bytes:
    """``Document``: swagger=1, info=2 (title=1, version=2), paths=8, definitions=9."""
    info = doc.get("info") or {}
    out = _string(1, doc.get("swagger", "2.0"))
    out += _bytes(2, _string(1, info.get("title", "")) + _string(2, info.get("version", "")))
    items = b""
    for path, item in (doc.get("paths") or {}).items():
        body = b"".join(_bytes(_OPERATIONS[m], _operation(op)) for m, op in item.items() if m in _OPERATIONS)
        items += _bytes(2, _string(1, path) + _bytes(2, body))  # Paths{path=2: NamedPathItem{name, value}}
    out += _bytes(8, items)
    named = b"".join(_bytes(1, _string(1, k) + _bytes(2, schema(v))) for k, v in doc["definitions"].items())
    return out + _bytes(9, named)  # Definitions{additional_properties=1: NamedSchema}
