"""One checkpoint file, two writers: the datastore's allocations and the branch-ENI pods.

The datastore must never see branch-ENI pods (their addresses are the branch ENIs', not the node's), yet
upstream's file is the one record of what runs on the node. Each writer gets a `Checkpointer` view: `read`
returns its own entries, `write` replaces its own entries and writes them with the other's last ones, under
one lock, so the file always holds both and never loses a change of either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from vpccni.ipamd.checkpoint.file import Checkpointer
from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry


def is_branch_entry(entry: CheckpointEntry) -> bool:
    return entry.branch is not None


class SharedCheckpoint:
    def __init__(self, inner: Checkpointer) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._shares: dict[bool, tuple[CheckpointEntry, ...] | None] = {False: None, True: None}
        self.datastore: Checkpointer = _View(self, branch=False)
        self.branches: Checkpointer = _View(self, branch=True)

    def _read(self, *, branch: bool) -> tuple[CheckpointEntry, ...] | None:
        with self._lock:
            entries = self._inner.read()
            if entries is None:
                return None
            mine = _share(entries, branch)
            other = self._shares[not branch]
            if other is None:  # until the other writer writes, keep what the file has of its entries
                self._shares[not branch] = _share(entries, not branch)
            return mine

    def _write(self, entries: Sequence[CheckpointEntry], *, branch: bool) -> None:
        mine = tuple(entries)
        with self._lock:
            other = self._shares[not branch]
            if other is None:
                stored = self._inner.read() or ()
                other = _share(stored, not branch)
                self._shares[not branch] = other
            combined = (*mine, *other) if not branch else (*other, *mine)
            self._inner.write(combined)
            self._shares[branch] = mine

    def _discard_partial_writes(self) -> tuple[str, ...]:
        # The temporary files are the one file's, whichever writer's interrupted write left them.
        with self._lock:
            return self._inner.discard_partial_writes()


def _share(entries: Sequence[CheckpointEntry], branch: bool) -> tuple[CheckpointEntry, ...]:
    return tuple(e for e in entries if is_branch_entry(e) == branch)


class _View:
    def __init__(self, shared: SharedCheckpoint, *, branch: bool) -> None:
        self._read: Callable[[], tuple[CheckpointEntry, ...] | None] = lambda: shared._read(branch=branch)
        self._write: Callable[[Sequence[CheckpointEntry]], None] = lambda e: shared._write(e, branch=branch)
        self._discard: Callable[[], tuple[str, ...]] = shared._discard_partial_writes

    def read(self) -> tuple[CheckpointEntry, ...] | None:
        return self._read()

    def write(self, entries: Sequence[CheckpointEntry]) -> None:
        self._write(entries)

    def discard_partial_writes(self) -> tuple[str, ...]:
        return self._discard()
