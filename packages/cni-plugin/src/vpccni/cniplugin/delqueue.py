"""The on-disk queue of DELs the shim could not hand to ipamd.

When ipamd is unreachable, DEL must still succeed (the runtime would otherwise retry forever and the pod
could not go away), but its IP and host rules must be released eventually. The shim writes the request to
one file per DEL in ``delQueueDir`` (atomic: temporary file, fsync, rename) and ipamd drains the folder
when it starts, before it serves, removing each entry only once the caller acknowledges it. The queue is
bounded; when full, DEL fails with code 11 so the runtime retries: nothing is lost silently.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator

from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.values import FrozenValue
from vpccni.cniplugin.wire import Request

log = logging.getLogger(__name__)

MAX_ENTRIES = 1024
MAX_ENTRY_BYTES = 2 << 20
SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
CORRUPT_SUFFIX = ".corrupt"
REJECTED_SUFFIX = ".rejected"
STALE_TMP_S = 60.0


def pending(directory: str) -> list[str]:
    """Names of the queued entries, oldest first (names start with a nanosecond timestamp)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(SUFFIX) and not n.startswith("."))


def enqueue(directory: str, request: Request, *, limit: int = MAX_ENTRIES) -> str:
    """Persist ``request`` and return the entry's path; :class:`CNIError` 11 when the queue is full.

    Concurrent writers may overshoot ``limit`` by their number; the bound exists to stop a crash loop
    from filling the disk, not to be exact.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    count = len(pending(directory))
    if count >= limit:
        raise CNIError(
            ErrorCode.TRY_AGAIN_LATER,
            f"ipamd is unreachable and the DEL queue {directory} is full ({count} entries): "
            "start aws-node so it drains the queue; the runtime will retry this DEL",
        )
    record = request.to_dict()
    record["queuedAt"] = time.time()
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    name = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}{SUFFIX}"
    tmp = os.path.join(directory, TMP_PREFIX + name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    final = os.path.join(directory, name)
    os.rename(tmp, final)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


class QueuedDel(FrozenValue):
    """One queued DEL; call :meth:`ack` after ipamd processed it, or leave it for the next drain."""

    __slots__ = ("path", "queued_at", "request")
    path: str
    queued_at: float
    request: Request

    def __init__(self, *, path: str, request: Request, queued_at: float) -> None:
        self._set("path", path)
        self._set("request", request)
        self._set("queued_at", queued_at)

    def ack(self) -> None:
        """Remove the entry: ipamd released what the DEL asked for."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def reject(self) -> str:
        """Set the entry aside (``*.rejected``) for an operator: ipamd refused it for good."""
        target = self.path + REJECTED_SUFFIX
        try:
            os.rename(self.path, target)
        except FileNotFoundError:
            pass
        return target


def _load(path: str) -> QueuedDel:
    with open(path, "rb") as f:
        body = f.read(MAX_ENTRY_BYTES + 1)
    if len(body) > MAX_ENTRY_BYTES:
        raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
    data = json.loads(body)
    request = Request.from_dict(data)
    if request.command != "DEL":
        raise ValueError(f"holds a {request.command}, not a DEL")
    queued_at = data.get("queuedAt", 0.0)
    return QueuedDel(path=path, request=request, queued_at=float(queued_at) if queued_at else 0.0)


def _remove_stale_tmp(directory: str) -> None:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(TMP_PREFIX):
            path = os.path.join(directory, name)
            try:
                if time.time() - os.stat(path).st_mtime > STALE_TMP_S:
                    os.unlink(path)
            except FileNotFoundError:
                pass


def drain(directory: str) -> Iterator[QueuedDel]:
    """Yield the queued DELs oldest first. Unreadable entries are renamed ``*.corrupt`` and logged, not
    deleted, so an operator can look at them."""
    _remove_stale_tmp(directory)
    for name in pending(directory):
        path = os.path.join(directory, name)
        try:
            entry = _load(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, CNIError) as exc:
            log.warning("queued DEL %s is unreadable (%s): kept as %s%s", path, exc, path, CORRUPT_SUFFIX)
            try:
                os.rename(path, path + CORRUPT_SUFFIX)
            except OSError:
                pass
            continue
        yield entry
