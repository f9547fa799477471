"""The standalone executables in a CNI bin dir, and upgrading them while a runtime executes them.

Layout (what ``standalone`` builds and the init container copies into ``/opt/cni/bin``)::

    aws-cni -> .vpccni/<version>-<digest>/aws-cni      a relative symlink per executable
    .vpccni/<version>-<digest>/                          one build: never changed once in place

An upgrade copies the new build under a temporary name, renames it into place once complete, then swaps
each symlink (a new symlink renamed over the old one). A runtime starting the executable meanwhile gets the
old build or the new one, whole; a call already running keeps using its own build's files (the shim
imports some modules only on slow paths, long after it started). So a build stops being linked before it
is deleted: the directory's mtime records when, and it is removed by a later install once
``RETIRE_GRACE_S`` (longer than any call can run) have passed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

RUNTIME_DIR = ".vpccni"
# A shim call lasts at most its ipamd timeout (60 s) plus start-up: an hour is far beyond any.
RETIRE_GRACE_S = 3600.0


class InstallError(RuntimeError):
    """The executables cannot be installed; the message says why and what to do."""


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _fsync_tree(root: Path) -> None:
    """Data and directory entries on disk before the rename publishes them: a build in place is whole even
    after a power loss."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_runtime(staged: Path, bin_dir: Path, name: str) -> Path:
    """Move the complete build ``staged`` (on ``bin_dir``'s file system) to ``.vpccni/<name>``. A build
    already there with the same files is kept (``staged`` is then left to the caller); a damaged one is
    moved aside first, for ``collect`` to delete."""
    runtimes = bin_dir / RUNTIME_DIR
    final = runtimes / name
    if final.is_dir() and _files(final) == _files(staged):
        return final
    _fsync_tree(staged)
    if final.exists():
        final.rename(runtimes / f".damaged-{name}-{secrets.token_hex(4)}")
    try:
        staged.rename(final)
    except OSError as exc:
        # Another installer put the same build in place between the check and the rename.
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    _fsync_dir(runtimes)
    return final


def copy_runtime(source: Path, bin_dir: Path, name: str) -> Path:
    """Copy the build ``source`` into ``bin_dir/.vpccni/<name>`` (unless it is there already)."""
    runtimes = bin_dir / RUNTIME_DIR
    final = runtimes / name
    if final.is_dir() and _files(final) == _files(source):
        return final
    runtimes.mkdir(parents=True, exist_ok=True)
    staged = runtimes / f".tmp-{name}-{secrets.token_hex(4)}"
    try:
        shutil.copytree(source, staged, symlinks=True, copy_function=shutil.copy)
        return commit_runtime(staged, bin_dir, name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def link(bin_dir: Path, executable: str, runtime: str) -> Path:
    """Point ``bin_dir/<executable>`` at that build's executable: a new symlink renamed over the old entry."""
    path = bin_dir / executable
    tmp = bin_dir / f".{executable}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(f"{RUNTIME_DIR}/{runtime}/{executable}", tmp)
    os.replace(tmp, path)
    return path


def runtime_of(bin_dir: Path, executable: str) -> str | None:
    """The build ``bin_dir/<executable>`` runs, or None when it is not a standalone executable's symlink."""
    try:
        target = os.readlink(bin_dir / executable)
    except OSError:
        return None
    parts = target.split("/")
    if len(parts) == 3 and parts[0] == RUNTIME_DIR and parts[2] == executable:
        return parts[1]
    return None


def linked(bin_dir: Path) -> set[str]:
    """Every build some executable in ``bin_dir`` points at."""
    return {r for entry in bin_dir.iterdir() if (r := runtime_of(bin_dir, entry.name)) is not None}


def collect(bin_dir: Path, *, grace_s: float = RETIRE_GRACE_S, now: float | None = None) -> list[Path]:
    """Delete the builds no executable has pointed at for ``grace_s`` (and left-over temporary copies)."""
    runtimes = bin_dir / RUNTIME_DIR
    if not runtimes.is_dir():
        return []
    keep = linked(bin_dir)
    clock = time.time() if now is None else now
    removed = []
    for entry in runtimes.iterdir():
        if entry.name not in keep and clock - entry.lstat().st_mtime >= grace_s:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def reporting_read_only(bin_dir: Path) -> Iterator[None]:
    """Turn a write refused by a read-only file system into an InstallError that says what to change."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
        raise InstallError(
            f"cannot install CNI plugins into {bin_dir}: it is on a read-only file system. The container "
            "runtime executes CNI plugins from this directory (the host's /opt/cni/bin), so the aws-node "
            "init container needs it mounted read-write (the manifest's hostPath volume cni-bin-dir)"
        ) from exc


def install(
    source_dir: Path,
    bin_dir: Path,
    executables: Sequence[str] | None = None,
    *,
    grace_s: float = RETIRE_GRACE_S,
) -> list[Path]:
    """Install ``executables`` (default: every standalone executable in ``source_dir``) from
    ``source_dir`` (a ``standalone`` build's layout, e.g. the image's /app) into ``bin_dir``: copy their
    builds, swap their symlinks, retire the builds no longer linked, delete those retired longer than
    ``grace_s`` ago. Returns the installed paths."""
    if executables is None:
        executables = sorted(e.name for e in source_dir.iterdir() if runtime_of(source_dir, e.name))
        if not executables:
            raise InstallError(
                f"{source_dir} holds no standalone executable (a symlink into {RUNTIME_DIR}/): the image is "
                "incomplete, rebuild it (deploy/image/build.sh)"
            )
    wanted = {}
    for name in executables:
        runtime = runtime_of(source_dir, name)
        if runtime is None:
            raise InstallError(
                f"{source_dir / name} is not a standalone executable (a symlink into "
                f"{RUNTIME_DIR}/): the image is incomplete, rebuild it (deploy/image/build.sh)"
            )
        wanted[name] = runtime
    with reporting_read_only(bin_dir):
        bin_dir.mkdir(parents=True, exist_ok=True)
        for runtime in sorted(set(wanted.values())):
            copy_runtime(source_dir / RUNTIME_DIR / runtime, bin_dir, runtime)
        return activate(bin_dir, wanted, grace_s=grace_s)


def activate(bin_dir: Path, wanted: Mapping[str, str], *, grace_s: float = RETIRE_GRACE_S) -> list[Path]:
    """Link each executable to its build (``{executable: build}``, builds already in place), retire the
    builds no longer linked and delete those retired longer than ``grace_s`` ago."""
    before = linked(bin_dir)
    paths = [link(bin_dir, name, runtime) for name, runtime in wanted.items()]
    for retired in before - linked(bin_dir):
        os.utime(bin_dir / RUNTIME_DIR / retired)  # the start of its grace period
    for name in wanted:
        # What the single-file script of earlier versions compiled for another host interpreter.
        (bin_dir / f".{name}.code").unlink(missing_ok=True)
    collect(bin_dir, grace_s=grace_s)
    return paths
