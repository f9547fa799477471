"""The machine a benchmark ran on, for the results file and the docs page."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _first_value(path: str, prefix: str, sep: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith(prefix):
            return line.split(sep, 1)[1].strip().strip('"')
    return ""


def describe() -> dict[str, Any]:
    mem_kib = _first_value("/proc/meminfo", "MemTotal", ":").split()
    return {
        "cores": os.cpu_count(),
        "cpu": _first_value("/proc/cpuinfo", "model name", ":"),
        "memory_mib": int(mem_kib[0]) // 1024 if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "os": _first_value("/etc/os-release", "PRETTY_NAME=", "="),
        # Other work on the machine skews every number: say how busy it was.
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }
