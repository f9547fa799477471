"""Growth under way: each growth action (an assignment to an ENI, a new ENI) runs on a worker thread, so
several ENIs attach at once and the pool loop plans on while they do; what is in flight is known to the
planner (`growth.InFlight`)."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from vpccni.ipamd.pool.decisions import AllocateEni
from vpccni.ipamd.pool.growth import Growth, InFlight

log = logging.getLogger(__name__)


class GrowthRunner:
    """`execute(growth)` does one growth action (it handles its own errors); `on_done()` after each (the pool
    manager plans again)."""

    def __init__(
        self, *, execute: Callable[[Growth], None], on_done: Callable[[], None], workers: int
    ) -> None:
        self._execute = execute
        self._on_done = on_done
        self._workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None  # started on first use: constructors start nothing
        self._lock = threading.Lock()
        self._inflight: dict[int, InFlight] = {}
        self._futures: dict[int, Future[None]] = {}
        self._keys = itertools.count(1)

    def inflight(self) -> tuple[InFlight, ...]:
        with self._lock:
            return tuple(self._inflight.values())

    def enis_in_flight(self) -> int:
        return sum(1 for item in self.inflight() if item.eni_id is None)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._inflight)

    def run(self, growth: Sequence[Growth]) -> None:
        """Start these growth actions, new ENIs first (they take longest)."""
        for item in sorted(growth, key=lambda g: not isinstance(g, AllocateEni)):
            self._submit(item)

    def wait(self) -> None:
        """Until no growth is in flight."""
        while True:
            with self._lock:
                pending = list(self._futures.values())
            if not pending:
                return
            for future in pending:
                future.result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _register(self, item: Growth) -> int:
        with self._lock:
            key = next(self._keys)
            self._inflight[key] = InFlight.of(key, item)
            return key

    def _unregister(self, key: int) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            self._futures.pop(key, None)

    def _submit(self, item: Growth) -> None:
        key = self._register(item)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="pool-grow")
            self._futures[key] = self._pool.submit(self._task, key, item)

    def _task(self, key: int, item: Growth) -> None:
        try:
            self._execute(item)
        except Exception:
            log.exception("growing the pool failed; the next iteration plans again")
        finally:
            self._unregister(key)
            self._on_done()
