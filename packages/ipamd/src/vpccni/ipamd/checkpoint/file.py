"""The checkpoint file `/var/run/aws-node/ipam.json` (AWS_VPC_K8S_CNI_BACKING_STORE) and the seam around it.

Written on every change before the change is acknowledged, as upstream: a temp file in the same directory,
fsync, rename. ipamd dying (kill -9, OOM) at any point leaves the old or the new file, and once the rename is
done the change survives it. The directory is not fsync'd: that only matters across a power loss or a kernel
crash, after which every pod is gone and restore drops their entries anyway, either file being valid (it cost
a second disk flush per pod, the largest part of an ADD on a busy disk).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from vpccni.ipamd.checkpoint.fileformat import HEAD, TAIL, CheckpointEntry, decode, encode_entry


class Checkpointer(Protocol):
    def read(self) -> tuple[CheckpointEntry, ...] | None:
        """The stored allocations, or None when there is no checkpoint yet (a fresh node)."""
        ...

    def write(self, entries: Sequence[CheckpointEntry]) -> None:
        """Replace the stored allocations atomically; raises OSError when that is impossible."""
        ...

    def discard_partial_writes(self) -> tuple[str, ...]:
        """Remove what writes a crash interrupted left behind (before anything writes); returns its names."""
        ...


class FileCheckpointer:
    """The real checkpoint file. `rename` is the commit point (a seam for crash-safety tests)."""

    def __init__(self, path: Path | str, *, rename: Callable[[str, str], None] = os.replace) -> None:
        self._path = Path(path)
        self._rename = rename
        # Each entry's JSON by entry object: the datastore keeps one entry per assignment, so a write encodes
        # only what changed since the last one (250 entries took 0.5 ms to encode, per ADD).
        self._encoded: dict[int, tuple[CheckpointEntry, bytes]] = {}
        self._encode_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def read(self) -> tuple[CheckpointEntry, ...] | None:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return None
        return decode(data, source=str(self._path))

    def discard_partial_writes(self) -> tuple[str, ...]:
        """The temporary files of writes a kill interrupted before their rename (`ipam.json.tmp*`): never
        read, and each such crash would leave one more in the state directory for good."""
        prefix = self._path.name + ".tmp"
        removed = []
        try:
            found = [e for e in os.scandir(self._path.parent) if e.name.startswith(prefix)]
        except FileNotFoundError:
            return ()
        for leftover in found:
            if leftover.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover.path)
                    removed.append(leftover.name)
        return tuple(sorted(removed))

    def write(self, entries: Sequence[CheckpointEntry]) -> None:
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self._path.name + ".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(self._encode(entries))
                handle.flush()
                # Content on disk before the rename: after a crash the name never points at an empty file.
                os.fsync(handle.fileno())
            # Pod names and addresses: root only, as upstream's file (Go's temp files are 0600).
            os.chmod(tmp, 0o600)
            self._rename(tmp, str(self._path))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _encode(self, entries: Sequence[CheckpointEntry]) -> bytes:
        with self._encode_lock:
            known, fresh = self._encoded, {}
            parts = []
            for entry in entries:
                hit = known.get(id(entry))
                part = hit[1] if hit is not None and hit[0] is entry else encode_entry(entry)
                fresh[id(entry)] = (entry, part)  # holding the entry keeps its id from being reused
                parts.append(part)
            self._encoded = fresh
        return HEAD + b",".join(parts) + TAIL
