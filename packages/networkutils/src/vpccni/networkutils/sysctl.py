"""`sysctl` for the network namespace of the calling thread (/proc/sys resolves per thread).

Paths are joined as plain strings: pathlib interns every path part, and each pod's veth name would stay in
the interpreter's interned-string table for good (measurable growth over thousands of pods).
"""

from __future__ import annotations

import os


def write_sysctl(proc_sys: str | os.PathLike[str], key: str, value: str) -> bool:
    """`sysctl -w KEY=VALUE` (key like `net/ipv4/ip_forward`); False when the key does not exist."""
    try:
        with open(f"{os.fspath(proc_sys)}/{key}", "w", encoding="ascii") as f:
            f.write(value)
    except FileNotFoundError:
        return False
    return True


def read_sysctl(proc_sys: str | os.PathLike[str], key: str) -> str | None:
    """`sysctl KEY`; None when the key does not exist."""
    try:
        with open(f"{os.fspath(proc_sys)}/{key}", encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
