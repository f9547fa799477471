"""A frozen, keyword-only value base for the shim's hot path.

The shim must start in a few milliseconds and ``dataclasses`` alone costs ~5 ms to import (it pulls in
``inspect``), so the values the shim builds on every call use this small base instead: subclasses declare
``__slots__`` and a keyword-only ``__init__`` that sets fields with ``_set``; afterwards the object is
immutable, compares by value and has a readable repr.
"""

from __future__ import annotations


class FrozenValue:
    __slots__ = ()

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def _fields(self) -> tuple[str, ...]:
        names: list[str] = []
        for klass in reversed(type(self).__mro__):
            names.extend(getattr(klass, "__slots__", ()))
        return tuple(names)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields())

    def __hash__(self) -> int:
        return hash(tuple(repr(getattr(self, n)) for n in self._fields()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields())
        return f"{type(self).__name__}({inner})"
