"""`metav1.LabelSelector` (matchLabels and matchExpressions), parsed once and matched against labels."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector the API server would have rejected; the message names the bad part."""


class Operator(enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, kw_only=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.EXISTS:
            return self.key in labels
        if self.operator is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if self.operator is Operator.IN:
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


@dataclass(frozen=True, kw_only=True)
class LabelSelector:
    """All requirements ANDed; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> LabelSelector:
        """Parse `{"matchLabels": {...}, "matchExpressions": [...]}`; raises SelectorError."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise SelectorError(f"a label selector must be an object, not {type(raw).__name__}")
        reqs: list[Requirement] = []
        for key, value in sorted((raw.get("matchLabels") or {}).items()):
            reqs.append(Requirement(key=str(key), operator=Operator.IN, values=frozenset({str(value)})))
        for expr in raw.get("matchExpressions") or ():
            reqs.append(_requirement(expr))
        return cls(requirements=tuple(reqs))

    def to_json(self) -> dict[str, Any]:
        """The selector in matchLabels (single-value In) and matchExpressions form."""
        labels: dict[str, str] = {}
        exprs: list[dict[str, Any]] = []
        for r in self.requirements:
            if r.operator is Operator.IN and len(r.values) == 1 and r.key not in labels:
                labels[r.key] = next(iter(r.values))
                continue
            expr: dict[str, Any] = {"key": r.key, "operator": r.operator.value}
            if r.operator in (Operator.IN, Operator.NOT_IN):
                expr["values"] = sorted(r.values)
            exprs.append(expr)
        out: dict[str, Any] = {}
        if labels:
            out["matchLabels"] = labels
        if exprs:
            out["matchExpressions"] = exprs
        return out

    def describe(self) -> str:
        if not self.requirements:
            return "{}"
        parts = []
        for r in self.requirements:
            if r.operator is Operator.EXISTS:
                parts.append(r.key)
            elif r.operator is Operator.DOES_NOT_EXIST:
                parts.append(f"!{r.key}")
            elif r.operator is Operator.IN and len(r.values) == 1:
                parts.append(f"{r.key}={next(iter(r.values))}")
            else:
                op = "in" if r.operator is Operator.IN else "notin"
                parts.append(f"{r.key} {op} ({','.join(sorted(r.values))})")
        return ",".join(parts)


def _requirement(expr: Any) -> Requirement:
    if not isinstance(expr, Mapping) or not expr.get("key"):
        raise SelectorError(f"matchExpressions entry {expr!r} has no key")
    try:
        op = Operator(expr.get("operator"))
    except ValueError:
        raise SelectorError(
            f"matchExpressions operator {expr.get('operator')!r} for key {expr['key']!r} is not one of "
            "In, NotIn, Exists, DoesNotExist"
        ) from None
    values = frozenset(str(v) for v in expr.get("values") or ())
    if op in (Operator.IN, Operator.NOT_IN) and not values:
        raise SelectorError(f"matchExpressions {op.value} for key {expr['key']!r} needs values")
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        raise SelectorError(f"matchExpressions {op.value} for key {expr['key']!r} takes no values")
    return Requirement(key=str(expr["key"]), operator=op, values=values)
