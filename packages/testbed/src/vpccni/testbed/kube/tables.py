"""Server-side table output (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``), as kubectl asks.

A real API server computes every cell (ages as "5m", READY as "1/1"); kubectl only prints them, hiding the
columns of priority > 0 unless ``-o wide``. The built-in types' column sets are in ``printers.py``; a type
without one gets the default NAME, CREATED AT; a custom resource gets NAME and its CRD's printer columns.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
Cell = Callable[[Mapping[str, Any], datetime.datetime], Any]

NONE = "<none>"


@dataclass(frozen=True, kw_only=True)
class Column:
    """One ``TableColumnDefinition`` and how to compute its cell from an object."""

    name: str
    cell: Cell
    type: str = "string"
    format: str = ""
    description: str = ""
    priority: int = 0  # 1: only with -o wide

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


# -- cell helpers -----------------------------------------------------------------------------------


def meta_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def path_of(obj: Mapping[str, Any], *keys: str) -> Any:
    node: Any = obj
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Kubernetes' ``duration.HumanDuration``: "45s", "3m20s", "15m", "5h10m", "3d4h", "2y"."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours = s // 60, s // 3600
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def age_since(value: str | None, now: datetime.datetime) -> str:
    then = parse_time(value)
    return "<unknown>" if then is None else human_duration((now - then).total_seconds())


def _name(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    return meta_of(obj).get("name", "")


def _age(obj: Mapping[str, Any], now: datetime.datetime) -> Any:
    return age_since(meta_of(obj).get("creationTimestamp"), now)


def _created_at(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    return meta_of(obj).get("creationTimestamp", "")


NAME = Column(
    name="Name",
    type="string",
    format="name",
    cell=_name,
    description="Name must be unique within a namespace.",
)
AGE = Column(
    name="Age",
    cell=_age,
    description="CreationTimestamp is a timestamp representing the server time when this object was created.",
)
CREATED_AT = Column(
    name="Created At",
    type="date",
    cell=_created_at,
    description="CreationTimestamp is a timestamp representing the server time when this object was created.",
)
DEFAULT_COLUMNS: tuple[Column, ...] = (NAME, CREATED_AT)
# A custom resource's default column (its CRD names none): a date the server turns into an age.
AGE_DATE = Column(name="Age", type="date", cell=_age, description=AGE.description)


# -- JSONPath columns of custom resources -----------------------------------------------------------

PathPart = str | int
_PATH_PART = re.compile(r"\.([A-Za-z0-9_$-]+)|\[(\d+)\]")


def parse_json_path(text: str) -> tuple[PathPart, ...]:
    """A CRD printer column's ``jsonPath``: ``.spec.features``, ``.status.conditions[0].type``.

    Raises ValueError for anything else (filters, wildcards), as the path must name one value."""
    parts: list[PathPart] = []
    pos = 0
    while pos < len(text):
        m = _PATH_PART.match(text, pos)
        if m is None:
            raise ValueError(
                f"unsupported jsonPath {text!r}: use a simple path such as .spec.replicas or .status.items[0]"
            )
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts:
        raise ValueError(f"empty jsonPath {text!r}: use a path such as .spec.replicas")
    return tuple(parts)


def json_path_value(obj: Any, path: Sequence[PathPart]) -> Any:
    node = obj
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
        else:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node


def json_path_text(obj: Any, path: Sequence[PathPart]) -> str | None:
    """As kubectl's JSONPath printer: maps and lists as compact JSON, scalars as Go prints them."""
    value = json_path_value(obj, path)
    if value is None:
        return None
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def json_path_column(
    *,
    name: str,
    json_path: str,
    type: str = "string",
    format: str = "",
    description: str = "",
    priority: int = 0,
) -> Column:
    """A CRD's additionalPrinterColumn: the value at ``json_path``, shown by its declared type
    (dates as ages; a missing value is an empty cell, which kubectl prints as <none>)."""
    path = parse_json_path(json_path)

    def cell(obj: Mapping[str, Any], now: datetime.datetime) -> Any:
        if type == "string":
            return json_path_text(obj, path)
        value = json_path_value(obj, path)
        if value is None:
            return None
        if type == "date":
            return age_since(str(value), now)
        if type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        if type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if type == "boolean" and isinstance(value, bool):
            return value
        return None

    return Column(name=name, cell=cell, type=type, format=format, description=description, priority=priority)


# -- the Table document -----------------------------------------------------------------------------


def table(
    columns: Sequence[Column],
    objects: Sequence[Obj],
    *,
    resource_version: str,
    include_object: str = "PartialObjectMetadata",
    now: datetime.datetime | None = None,
    api_version: str = "meta.k8s.io/v1",
) -> Obj:
    """A ``meta.k8s.io/v1`` Table of ``objects``; ``include_object`` is the request's ``includeObject``
    (``None``, ``Object`` or ``PartialObjectMetadata``, the default)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    rows = []
    for obj in objects:
        row: Obj = {"cells": [_json_cell(c.cell(obj, moment)) for c in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata") or {},
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [c.definition() for c in columns],
        "rows": rows,
    }


def _json_cell(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)
