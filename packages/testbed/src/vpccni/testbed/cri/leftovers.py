"""What a private containerd can leave on the machine, and how to remove it: its processes (containerd,
shims, pod processes), mounts under its directory, the directory, its cgroups, and /run/containerd.

Every harness directory records its owner (the test process, with its start time against PID reuse) and its
cgroup parent. A harness whose owner died without `stop()` (a killed test run) is swept by the next harness
to start: only directories whose owner is gone are touched, so concurrent runs never disturb each other.
Processes are found by this directory's own paths on their command line or by its cgroups, and each is
ended by PID.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"
DIR_PREFIX = "vpccni-cri-"
# containerd 1.6 puts shim sockets here whatever its config says.
SHIM_SOCKET_DIR = Path("/run/containerd/s")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# A directory without an owner file this old is a start that died before writing it (no process can exist).
ORPHAN_AGE_S = 120.0


@dataclass(frozen=True, kw_only=True)
class Owner:
    """The process that started a harness, and the cgroup parent its pods use."""

    pid: int
    start_ticks: int
    cgroup_parent: str

    @classmethod
    def me(cls, *, cgroup_parent: str) -> Owner:
        return cls(pid=os.getpid(), start_ticks=_start_ticks(os.getpid()) or 0, cgroup_parent=cgroup_parent)

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks

    def write(self, base: Path) -> None:
        (base / OWNER_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, base: Path) -> Owner | None:
        try:
            raw = json.loads((base / OWNER_FILE).read_text())
            return cls(
                pid=int(raw["pid"]),
                start_ticks=int(raw["start_ticks"]),
                cgroup_parent=str(raw["cgroup_parent"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def clean(base: Path, *, cgroup_parent: str) -> None:
    """End every process of the harness at `base` (by PID), then remove its mounts, directory and cgroups."""
    # Pod processes first, with SIGKILL: a sandbox's init ignores SIGTERM (PID 1 of its PID namespace), and
    # while its shim lives the shim reaps it, so no zombie is left for the machine's init to collect.
    for pid in _cgroup_pids(cgroup_parent):
        log.warning("killing leftover pod process %d of the containerd harness in %s", pid, base)
        end_process(pid, sig=signal.SIGKILL)
    for pid in harness_pids(base=base):
        log.warning("ending leftover process %d of the containerd harness in %s", pid, base)
        end_process(pid)
    unmount_under(base)
    shutil.rmtree(base, ignore_errors=True)
    remove_cgroups(cgroup_parent)
    remove_empty_run_dirs()


def sweep_stale(tmp_root: Path) -> list[Path]:
    """Clean every harness directory under `tmp_root` whose owner is gone; returns the directories cleaned."""
    cleaned = []
    for base in sorted(tmp_root.glob(f"{DIR_PREFIX}*")):
        if not base.is_dir():
            continue
        owner = Owner.read(base)
        if owner is None:
            with suppress(OSError):
                if time.time() - base.stat().st_mtime > ORPHAN_AGE_S:
                    unmount_under(base)
                    shutil.rmtree(base, ignore_errors=True)
                    cleaned.append(base)
            continue
        if owner.alive():
            continue
        log.warning("sweeping the containerd harness %s left by process %d", base, owner.pid)
        clean(base, cgroup_parent=owner.cgroup_parent)
        cleaned.append(base)
    return cleaned


def harness_pids(*, base: Path) -> list[int]:
    """The shims (by the harness's socket path) and containerd (by its config path), in that order."""
    shims = set(_pids_with_args(("-address", str(base / "containerd.sock"))))
    daemon = set(_pids_with_args(("--config", str(base / "config.toml")))) - shims
    return [pid for pid in (*sorted(shims), *sorted(daemon)) if pid != os.getpid()]


def end_process(
    pid: int, *, proc: subprocess.Popen[bytes] | None = None, sig: int = signal.SIGTERM, grace: float = 10.0
) -> None:
    """Send `sig` (SIGTERM by default), SIGKILL after `grace` seconds, and wait until the process is gone."""
    with suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not _wait_gone(pid, proc, grace) and sig != signal.SIGKILL:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, proc, 10.0)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: its parent only has to reap it)."""
    return _start_ticks(pid) is not None


def _wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if (proc.poll() is not None) if proc is not None else not alive(pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def unmount_under(base: Path) -> None:
    """Lazily unmount every mount point below `base` (overlay rootfs, shm, netns), deepest first."""
    prefix = str(base.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
        if point.startswith(prefix):
            points.append(point)
    for point in sorted(set(points), key=lambda p: -p.count("/")):
        proc = subprocess.run(["umount", "--lazy", point], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log.warning("could not unmount %s: %s", point, proc.stderr.strip())


def remove_cgroups(parent: str) -> None:
    """rmdir the parent's cgroup tree, deepest first (cgroupfs only removes empty groups, with rmdir)."""
    for top in _cgroup_dirs(parent):
        # os.walk ignores groups that vanish meanwhile (runc removes a pod's group as its process ends).
        for directory, _, _ in os.walk(top, topdown=False):
            with suppress(OSError):
                os.rmdir(directory)


def remove_empty_run_dirs() -> None:
    """/run/containerd/s and /run/containerd, only when empty: another containerd may be using them."""
    for directory in (SHIM_SOCKET_DIR, SHIM_SOCKET_DIR.parent):
        with suppress(OSError):
            directory.rmdir()


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None  # a zombie is dead for our purposes (its parent reaps it)
    return int(fields[19])


def _pids_with_args(pair: tuple[str, str]) -> Iterable[int]:
    """PIDs whose command line holds `pair` as consecutive arguments."""
    wanted = [pair[0].encode(), pair[1].encode()]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(args[i : i + 2] == wanted for i in range(len(args) - 1)):
            yield int(entry.name)


def _cgroup_dirs(parent: str) -> list[Path]:
    """This parent's directory in every mounted hierarchy (cgroup v1 has one per controller)."""
    relative = parent.strip("/")
    # Only a harness's own parent: never a path that could name the machine's cgroups.
    if not relative.startswith(DIR_PREFIX) or "/" in relative or not CGROUP_ROOT.is_dir():
        return []
    dirs = [h / relative for h in CGROUP_ROOT.iterdir() if (h / relative).is_dir()]
    if (CGROUP_ROOT / relative).is_dir():  # cgroup v2 unified at the root
        dirs.append(CGROUP_ROOT / relative)
    return dirs


def _cgroup_pids(parent: str) -> list[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs(parent):
        for directory, _, files in os.walk(top):
            if "cgroup.procs" in files:
                with suppress(OSError, ValueError):
                    pids.update(int(line) for line in Path(directory, "cgroup.procs").read_text().split())
    return sorted(pids)
