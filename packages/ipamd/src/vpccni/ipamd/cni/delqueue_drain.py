"""Finishing the DELs the shim queued on disk while ipamd was unreachable (at start, before serving, and
every few seconds while serving)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from vpccni.cniplugin import delqueue
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.wire import Request

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DrainReport:
    done: int
    failed: int
    rejected: int = 0


def drain_del_queue(directory: str, handler: Callable[[Request], None]) -> DrainReport:
    """Call ``handler`` for every queued DEL, oldest first. An entry is removed once it succeeded; one that
    failed for a reason that can pass (try again later, an internal error, I/O) is kept for the next drain;
    one refused for good (a config error such as an unsupported cniVersion) is set aside as ``*.rejected``
    and logged, so it neither blocks nor repeats."""
    done = failed = rejected = 0
    for entry in delqueue.drain(directory):
        who = f"container {entry.request.container_id} ({entry.request.ifname})"
        try:
            handler(entry.request)
        except CNIError as exc:
            if exc.code in (ErrorCode.TRY_AGAIN_LATER, ErrorCode.INTERNAL):
                failed += 1
                log.warning("queued DEL of %s failed, kept for the next drain: %s", who, exc.msg)
            else:
                rejected += 1
                kept_as = entry.reject()
                log.error("queued DEL of %s can never succeed (code %d: %s): set aside as %s",
                          who, exc.code, exc.msg, kept_as)  # fmt: skip
            continue
        except Exception as exc:  # one bad entry must not stop the drain
            failed += 1
            log.warning("queued DEL of %s failed, kept for the next drain: %s", who, exc)
            continue
        entry.ack()
        done += 1
    if done or failed or rejected:
        log.info("DEL queue %s: %d finished, %d kept, %d set aside", directory, done, failed, rejected)
    return DrainReport(done=done, failed=failed, rejected=rejected)
