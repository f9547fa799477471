"""Durability: a change is in the checkpoint before it is acknowledged, with one write serving many changes.

The datastore makes a change under its lock and numbers it (`changed()`); the caller then waits, outside the
lock, for a write that covers its number (`commit`). One writer at a time takes the list of allocations under
the lock and writes it, so the file follows the order of changes, and one write serves every change made
before it began (group commit: 30 concurrent ADDs need a few writes, not 30). A failed write rolls back the
change of the caller that wrote it, under both locks, before any other write can see it, and raises; the
others retry with their own write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from vpccni.ipamd.checkpoint.file import Checkpointer
from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry
from vpccni.ipamd.datastore.model import CheckpointWriteFailed
from vpccni.ipamd.datastore.writer import BackgroundCommits

_log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(
        self,
        *,
        checkpointer: Checkpointer,
        lock: threading.RLock,
        entries: Callable[[], Sequence[CheckpointEntry]],
    ) -> None:
        self._checkpointer = checkpointer
        self._lock = lock  # the datastore's
        self._entries = entries  # every assigned entry; called under `_lock`
        self._version = 0  # under `_lock`: the number of the last change
        self._durable = 0  # under `_write_lock`: the number of the last change in the file
        self._write_lock = threading.Lock()
        self._writer = BackgroundCommits()

    def changed(self) -> int:
        """Number a change just made (call with the datastore lock held)."""
        self._version += 1
        return self._version

    @property
    def version(self) -> int:
        """The last change's number (call with the datastore lock held)."""
        return self._version

    def current(self) -> int:
        with self._lock:
            return self._version

    def commit(
        self, version: int, roll_back: Callable[[], None] | None = None, *, force: bool = False
    ) -> None:
        """Return once change `version` is in the checkpoint, writing it unless a write since covered it.

        Called without the datastore lock. On a failed write `roll_back` (of this caller's change) runs under
        both locks, so no later write can record a change that its caller reports as failed.
        """
        with self._write_lock:
            if self._durable >= version and not force:
                return
            with self._lock:
                entries = list(self._entries())
                upto = self._version
            try:
                self._checkpointer.write(entries)
            except BaseException:
                if roll_back is not None:
                    with self._lock:
                        roll_back()
                raise
            self._durable = upto

    def record(
        self, version: int, roll_back: Callable[[], None] | None = None, *, what: str, outcome: str = ""
    ) -> None:
        """`commit` for a pod's change: any failure becomes CheckpointWriteFailed saying what was not
        recorded and what became of the change (the change must not stand unrecorded)."""
        try:
            self.commit(version, roll_back)
        except Exception as exc:
            raise CheckpointWriteFailed(
                f"could not record {what} in the checkpoint ({exc}){outcome}: check free space and "
                "permissions of the backing store"
            ) from exc

    def catch_up(self, what: str) -> None:
        """Write the current state for a change nobody waits for (evictions); a failure is logged and the
        next write catches up."""
        try:
            self.commit(self.current())
        except Exception:
            _log.exception("could not rewrite the checkpoint after %s; retried on the next change", what)

    def in_background(self, commit: Callable[[], None]) -> Future[None]:
        return self._writer.submit(commit)
