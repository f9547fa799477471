"""Conntrack entries of addresses that left the node: removed so that a flow the policy allowed an old pod
is never inherited by the next pod given its address."""

from __future__ import annotations

import logging
import re
import threading
from typing import Protocol

from vpccni.networkutils.commands import ToolRunner

log = logging.getLogger(__name__)

_DELETED = re.compile(r"(\d+) flow entries have been deleted")


class Conntrack(Protocol):
    def forget(self, address: str) -> int:
        """Delete every entry with `address` as original source or destination; how many went."""
        ...


class ConntrackTool:
    """`Conntrack` over conntrack-tools (`conntrack -D`), in the current or a named network namespace."""

    def __init__(self, *, binary: str = "conntrack", runner: ToolRunner | None = None) -> None:
        self._binary = binary
        self._runner = runner or ToolRunner()

    def forget(self, address: str) -> int:
        family = "ipv6" if ":" in address else "ipv4"
        deleted = 0
        for flag in ("-s", "-d"):
            try:
                code, out, err = self._runner.try_run([self._binary, "-D", "-f", family, flag, address])
            except FileNotFoundError:
                log.warning("conntrack is not installed: entries of %s stay until they time out", address)
                return 0
            found = _DELETED.search(err + out)
            if found:
                deleted += int(found.group(1))
            elif code not in (0, 1):  # 1: nothing matched
                log.warning("conntrack -D %s %s failed: %s", flag, address, err.strip())
        if deleted:
            log.info("deleted %d conntrack entries of %s", deleted, address)
        return deleted


# A change that drops more single addresses than this (say a 1,000-rule policy deleted) leaves their entries
# to expire: deleting them one `conntrack -D` at a time would take minutes. Local pods' are always deleted.
PEER_CAP = 64


class ConntrackJanitor:
    """Deletes conntrack entries on its own thread, so the table writer never waits for it."""

    def __init__(self, conntrack: Conntrack, *, peer_cap: int = PEER_CAP) -> None:
        self._conntrack = conntrack
        self._peer_cap = peer_cap
        self._cond = threading.Condition()
        self._pending: list[str] = []
        self._busy = False
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="conntrack-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def submit(self, *, pods: list[str], peers: list[str]) -> None:
        """Addresses of local pods that left (always), and of single-address peers rules dropped."""
        if len(peers) > self._peer_cap:
            log.info("%d peer addresses left the rules at once: their conntrack entries expire by themselves",
                     len(peers))  # fmt: skip
            peers = []
        with self._cond:
            self._pending.extend(a for a in (*pods, *peers) if a not in self._pending)
            self._cond.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Wait until everything submitted is done (tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout=timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stop)
                if self._stop:
                    return
                address = self._pending.pop(0)
                self._busy = True
            try:
                self._conntrack.forget(address)
            except Exception:  # the next address must still be done
                log.exception("deleting the conntrack entries of %s failed", address)
            with self._cond:
                self._busy = False
                self._cond.notify_all()
