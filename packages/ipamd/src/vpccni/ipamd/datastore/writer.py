"""A checkpoint writer thread, so a pod's ADD can wire its network while its assignment is being written."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future


class BackgroundCommits:
    """Runs `commit()` calls in order on one daemon thread and hands back futures.

    The thread starts on the first call and ends after `idle_s` without work, so an idle datastore (and
    every test's datastore) holds no thread.
    """

    def __init__(self, *, idle_s: float = 5.0, name: str = "checkpoint-writer") -> None:
        self._idle_s = idle_s
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[tuple[Callable[[], None], Future[None]]] = deque()
        self._running = False

    def submit(self, commit: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        with self._cond:
            self._queue.append((commit, future))
            if self._running:
                self._cond.notify()
            else:
                self._running = True
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(self._idle_s)
                if not self._queue:
                    self._running = False
                    return
                commit, future = self._queue.popleft()
            try:
                commit()
            except BaseException as exc:  # the waiting caller re-raises it
                future.set_exception(exc)
            else:
                future.set_result(None)
