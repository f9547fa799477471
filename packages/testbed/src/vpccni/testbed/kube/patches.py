"""Patch documents the testbed API server applies: JSON merge patch (RFC 7386), a simple strategic merge,
and JSON patch (RFC 6902) for add/replace/remove/test."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class PatchError(ValueError):
    """The patch document cannot be applied (the server answers 422 or 415)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, everything else (lists too) replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A simple strategic merge: like a merge patch, except lists whose items are all maps with a ``name``
    merge item by item on that key (containers, env, ports...), and ``$patch: delete`` removes an item."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(current, list) and _named_items(value + current):
            result[key] = _merge_named_lists(current, value)
        else:
            result[key] = strategic_merge_patch(current, value)
    return result


def _named_items(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, Mapping) and "name" in i for i in items)


def _merge_named_lists(current: list[Any], patch: list[Any]) -> list[Any]:
    merged = {item["name"]: item for item in current}
    order = [item["name"] for item in current]
    for item in patch:
        name = item["name"]
        if item.get("$patch") == "delete":
            merged.pop(name, None)
            continue
        if name not in merged:
            order.append(name)
        merged[name] = strategic_merge_patch(merged.get(name), item)
    return [merged[name] for name in order if name in merged]


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchError(f"JSON patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 ``add``, ``replace``, ``remove`` and ``test``."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        parts = _pointer(op.get("path", ""))
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        kind = op.get("op")
        try:
            if kind == "add" and isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), op["value"])
            elif kind in ("add", "replace"):
                if isinstance(parent, list):
                    parent[int(last)] = op["value"]
                else:
                    parent[last] = op["value"]
            elif kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind == "test":
                actual = parent[int(last)] if isinstance(parent, list) else parent.get(last)
                if actual != op.get("value"):
                    raise PatchError(f"JSON patch test failed at {op['path']}")
            else:
                raise PatchError(f"unsupported JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError) as exc:
            if isinstance(exc, PatchError):
                raise
            raise PatchError(f"JSON patch {kind} at {op.get('path')!r} failed: {exc}") from exc
    return doc


def apply_patch(content_type: str, target: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    media = content_type.split(";")[0].strip()
    if media == MERGE_PATCH:
        result = merge_patch(target, patch)
    elif media == STRATEGIC_MERGE_PATCH:
        result = strategic_merge_patch(target, patch)
    elif media == JSON_PATCH:
        result = json_patch(target, patch)
    else:
        raise PatchError(f"unsupported patch content type {media!r}: use {MERGE_PATCH} or {JSON_PATCH}")
    if not isinstance(result, dict):
        raise PatchError("the patched object is not a JSON object")
    return result
