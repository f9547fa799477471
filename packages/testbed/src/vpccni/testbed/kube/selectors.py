"""Kubernetes label and field selectors, parsed once and matched against raw objects."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """The selector string is malformed (the server answers 400 BadRequest)."""


class Operator(enum.Enum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!"


@dataclass(frozen=True, kw_only=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, value: str | None) -> bool:
        match self.operator:
            case Operator.EQUALS | Operator.IN:
                return value is not None and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return value is None or value not in self.values
            case Operator.EXISTS:
                return value is not None
            case Operator.NOT_EXISTS:
                return value is None


@dataclass(frozen=True, kw_only=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, values: Mapping[str, str]) -> bool:
        return all(req.matches(values.get(req.key)) for req in self.requirements)


_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s,]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


def _split_terms(text: str) -> list[str]:
    """Split at commas that are not inside ``( ... )`` value sets."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str | None) -> Selector:
    """``a=b,c!=d,e in (f,g),h notin (i),j,!k``."""
    if not text:
        return Selector()
    requirements = []
    for term in _split_terms(text):
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            op = Operator.IN if m.group(2) == "in" else Operator.NOT_IN
            requirements.append(Requirement(key=m.group(1), operator=op, values=values))
        elif m := _EQ_RE.match(term):
            op = Operator.NOT_EQUALS if m.group(2) == "!=" else Operator.EQUALS
            requirements.append(Requirement(key=m.group(1), operator=op, values=frozenset({m.group(3)})))
        elif m := _EXISTS_RE.match(term):
            op = Operator.NOT_EXISTS if m.group(1) else Operator.EXISTS
            requirements.append(Requirement(key=m.group(2), operator=op))
        else:
            raise SelectorError(f"unable to parse requirement {term!r} in label selector {text!r}")
    return Selector(requirements=tuple(requirements))


def parse_field_selector(text: str | None) -> Selector:
    """``spec.nodeName=n1,metadata.name!=x`` (fields support only equality, as on a real server)."""
    if not text:
        return Selector()
    requirements = []
    for term in _split_terms(text):
        m = _EQ_RE.match(term)
        if not m:
            raise SelectorError(
                f"invalid field selector term {term!r}: use <field>=<value> or <field>!=<value>"
            )
        op = Operator.NOT_EQUALS if m.group(2) == "!=" else Operator.EQUALS
        requirements.append(Requirement(key=m.group(1), operator=op, values=frozenset({m.group(3)})))
    return Selector(requirements=tuple(requirements))


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def fields_of(obj: Mapping[str, Any], selector: Selector) -> dict[str, str]:
    """The dotted-path field values the selector asks about; absent fields read as "" (as upstream)."""
    values: dict[str, str] = {}
    for req in selector.requirements:
        node: Any = obj
        for part in req.key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, bool):
            values[req.key] = "true" if node else "false"
        else:
            values[req.key] = "" if node is None else str(node)
    return values
