"""The prefixes delegated to each ENI, one table per family (moto has no prefix delegation, so the layer keeps
them): IPv4 /28s and IPv6 /80s."""

from __future__ import annotations

import ipaddress
import threading
from typing import Generic, TypeVar

N = TypeVar("N", ipaddress.IPv4Network, ipaddress.IPv6Network)


class PrefixTable(Generic[N]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_eni: dict[str, list[N]] = {}

    def of(self, eni_id: str) -> list[N]:
        with self._lock:
            return list(self._by_eni.get(eni_id, []))

    def add(self, eni_id: str, prefixes: list[N]) -> None:
        with self._lock:
            self._by_eni.setdefault(eni_id, []).extend(prefixes)

    def remove(self, eni_id: str, prefixes: list[N]) -> None:
        with self._lock:
            current = self._by_eni.get(eni_id, [])
            self._by_eni[eni_id] = [p for p in current if p not in prefixes]

    def drop(self, eni_id: str) -> None:
        with self._lock:
            self._by_eni.pop(eni_id, None)

    def all(self) -> dict[str, list[N]]:
        with self._lock:
            return {eni: list(p) for eni, p in self._by_eni.items()}
