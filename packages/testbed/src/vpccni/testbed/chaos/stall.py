"""Stretching a moment of a running agent so a SIGKILL lands inside it: strace's fault injection delays
chosen system calls of every thread of the process (`strace -f -p PID -e inject=SYSCALL:delay_enter=US`).

A checkpoint write is a temporary file, its fsync and a rename, in well under a millisecond on a tmpfs: a
kill aimed at it from outside lands there only by luck. With the rename delayed, the temporary file stays
in place until the kill, every time.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

ATTACH_TIMEOUT_S = 5.0


class SyscallDelay:
    """`with SyscallDelay(pid, ["rename", "renameat2"], 0.3): ...`; a no-op where strace is missing
    (`active` says which)."""

    def __init__(self, pid: int, syscalls: Sequence[str], delay_s: float) -> None:
        self._pid = pid
        self._syscalls = ",".join(syscalls)
        self._delay_us = int(delay_s * 1_000_000)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def active(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> SyscallDelay:
        strace = shutil.which("strace")
        if strace is None:
            return self
        self._proc = subprocess.Popen(
            [strace, "-f", "-qq", "-p", str(self._pid), "-o", "/dev/null", "-e", f"trace={self._syscalls}",
             "-e", f"inject={self._syscalls}:delay_enter={self._delay_us}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline and self._proc.poll() is None and not self._traced():
            time.sleep(0.01)
        return self

    def _traced(self) -> bool:
        """Whether every thread of the process has a tracer."""
        try:
            tasks = list(Path(f"/proc/{self._pid}/task").iterdir())
            return all(_tracer(task / "status") != 0 for task in tasks)
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # detaches from the agent, which goes on untraced
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _tracer(status: Path) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0
