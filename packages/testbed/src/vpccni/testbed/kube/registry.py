"""Which resource types a testbed API server serves: the built-in catalogue plus, while their
CustomResourceDefinitions exist, the custom ones (a CRD for a built-in custom type takes its place)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from vpccni.testbed.kube.resources import ALL_RESOURCES, ResourceType


class ResourceRegistry:
    """Thread-safe; the object store updates it as CRDs come and go."""

    def __init__(self, builtin: Iterable[ResourceType] = ALL_RESOURCES) -> None:
        self._builtin = tuple(builtin)
        self._custom: dict[str, tuple[ResourceType, ...]] = {}  # CRD name -> the types it serves
        self._lock = threading.Lock()

    def served(self) -> list[ResourceType]:
        """Every served type, built-ins first (a CRD's version of a built-in in its place)."""
        with self._lock:
            custom = [r for types in self._custom.values() for r in types]
        by_key = {r.key: r for r in custom}
        out = [by_key.pop(r.key, r) for r in self._builtin]
        return out + list(by_key.values())

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        for resource in self.served():
            if (resource.group, resource.version, resource.plural) == (group, version, plural):
                return resource
        return None

    def named(self, name: ResourceType | str) -> ResourceType:
        """A served type by ResourceType (its current definition), plural (core group first) or key
        (``events.k8s.io/v1/events``). A ResourceType no longer served is returned as it is."""
        served = self.served()
        if isinstance(name, ResourceType):
            return next((r for r in served if r.key == name.key), name)
        for resource in served:
            if name in (resource.key, resource.plural):
                return resource
        raise KeyError(f"the testbed API server does not serve {name!r}")

    def define(self, crd_name: str, types: Iterable[ResourceType]) -> None:
        with self._lock:
            self._custom[crd_name] = tuple(types)

    def undefine(self, crd_name: str) -> tuple[ResourceType, ...]:
        with self._lock:
            return self._custom.pop(crd_name, ())

    def defined_by(self, crd_name: str) -> tuple[ResourceType, ...]:
        with self._lock:
            return self._custom.get(crd_name, ())
