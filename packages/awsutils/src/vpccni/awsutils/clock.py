"""The clock seam of vpccni. awsutils' rate limiting, back-off and leak sweep, and every timer of ipamd (the
pool loop, cooldowns, retries, the datastore's timestamps) read time and wait through it, so tests never sleep
and a whole daemon runs on `vpccni.awsutils.testing.FakeClock`. networkutils and k8sapi import no sibling:
they take this clock's `sleep` or `monotonic` as a plain callable where they wait."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``."""

    def now(self) -> dt.datetime:
        """Current wall-clock time, timezone-aware UTC."""

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Block up to ``seconds`` or until ``event`` is set; return whether it is set (stoppable loops)."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))
