"""Finishing the DELs the shim queued on disk while ipamd was unreachable (run at start, before serving)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from vpccni.cniplugin import delqueue
from vpccni.cniplugin.errors import CNIError
from vpccni.cniplugin.wire import Request

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DrainReport:
    done: int
    failed: int


def drain_del_queue(directory: str, handler: Callable[[Request], None]) -> DrainReport:
    """Call ``handler`` for every queued DEL, oldest first; an entry is removed only when it succeeded,
    so a failed one is tried again at the next drain."""
    done = failed = 0
    for entry in delqueue.drain(directory):
        try:
            handler(entry.request)
        except (CNIError, OSError, ValueError) as exc:
            failed += 1
            log.warning(
                "queued DEL of container %s (%s) failed, kept for the next drain: %s",
                entry.request.container_id, entry.request.ifname, getattr(exc, "msg", exc),
            )  # fmt: skip
            continue
        entry.ack()
        done += 1
    if done or failed:
        log.info("DEL queue %s: %d finished, %d kept", directory, done, failed)
    return DrainReport(done=done, failed=failed)
