"""`sysctl` for the network namespace of the calling thread (/proc/sys resolves per thread)."""

from __future__ import annotations

from pathlib import Path


def write_sysctl(proc_sys: Path, key: str, value: str) -> bool:
    """`sysctl -w KEY=VALUE` (key like `net/ipv4/ip_forward`); False when the key does not exist."""
    try:
        (proc_sys / key).write_text(value)
    except FileNotFoundError:
        return False
    return True


def read_sysctl(proc_sys: Path, key: str) -> str | None:
    """`sysctl KEY`; None when the key does not exist."""
    try:
        return (proc_sys / key).read_text().strip()
    except FileNotFoundError:
        return None
