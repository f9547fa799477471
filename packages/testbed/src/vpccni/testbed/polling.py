"""Polling for tests that wait on an eventually consistent system (controllers, API server, datapath)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
    retry_on: tuple[type[Exception], ...] = (Exception,),
) -> T:
    """The first truthy value `check` returns; an exception in `retry_on` counts as "not yet" (a controller
    mid-change), any other propagates. AssertionError after `timeout_s`, caused by the last such exception."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            if value := check():
                return value
        except retry_on as err:
            last = err
        if time.monotonic() > deadline:
            # The last exception is the likeliest reason the wait failed: keep it as the cause.
            raise AssertionError(f"not within {timeout_s:.0f}s") from last
        time.sleep(interval_s)
