"""The sysctl seam: keys as paths under /proc/sys (`net/ipv4/conf/eth0/rp_filter`).

Tests give `ProcSysctl` a temporary directory as its root, so they never touch the machine's real sysctls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Sysctl(Protocol):
    def exists(self, key: str) -> bool: ...

    def read(self, key: str) -> str: ...

    def write(self, key: str, value: str) -> None: ...


class ProcSysctl:
    """`sysctl -w` through files under `root` (default /proc/sys)."""

    def __init__(self, root: Path = Path("/proc/sys")) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        parts = key.strip("/").split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid sysctl key {key!r}")
        return self.root.joinpath(*parts)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def read(self, key: str) -> str:
        return self._path(key).read_text().strip()

    def write(self, key: str, value: str) -> None:
        path = self._path(key)
        try:
            path.write_text(value + "\n")
        except OSError as exc:
            raise OSError(
                f"cannot set {key.replace('/', '.')}={value} ({exc}): the init container must be privileged "
                "and use the host network"
            ) from exc
