"""A stateful fake of the checkpoint seam (`Checkpointer`). Product code never imports this module."""

from __future__ import annotations

from collections.abc import Sequence

from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry, decode, encode


class MemoryCheckpointer:
    """Keeps the encoded checkpoint in memory (the same bytes the file holds); can be told to fail writes."""

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data
        self.writes = 0
        self.fail_writes = False

    def read(self) -> tuple[CheckpointEntry, ...] | None:
        return None if self.data is None else decode(self.data, source="memory checkpoint")

    def discard_partial_writes(self) -> tuple[str, ...]:
        return ()  # a write to memory is never interrupted half-way

    def write(self, entries: Sequence[CheckpointEntry]) -> None:
        if self.fail_writes:
            raise OSError(28, "No space left on device")
        self.data = encode(entries)
        self.writes += 1
