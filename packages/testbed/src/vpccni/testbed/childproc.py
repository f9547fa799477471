"""Child processes of the testbed (agents, daemons started through `ip netns exec`): ending one by PID, and
sampling its memory, descriptors and threads from /proc."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


def stop_child(proc: subprocess.Popen[bytes] | None, sig: int, *, timeout_s: float) -> int | None:
    """End a child started through `ip netns exec` (which execs it: the PID is the program's) by PID,
    SIGKILL after `timeout_s`; its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@dataclass(frozen=True, kw_only=True)
class ProcessSample:
    rss_mib: float
    fds: int
    threads: int


def process_sample_of(proc: subprocess.Popen[bytes] | None) -> ProcessSample | None:
    """A running child's resident memory, open descriptors and threads, or None when it is not running."""
    if proc is None or proc.poll() is not None:
        return None
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie has no memory left to report
        return None
    return ProcessSample(
        rss_mib=int(fields["VmRSS"].split()[0]) / 1024,
        fds=fds,
        threads=int(fields["Threads"]),
    )


def rss_mib_of(proc: subprocess.Popen[bytes] | None) -> float | None:
    """A running child's resident memory (VmRSS) in MiB."""
    sample = process_sample_of(proc)
    return sample.rss_mib if sample is not None else None
