"""Conntrack entries of addresses that left the node: removed so that a flow the policy allowed an old pod
is never inherited by the next pod given its address."""

from __future__ import annotations

import logging
import re
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
