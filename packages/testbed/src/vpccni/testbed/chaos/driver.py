"""Pods through the real shim as kubelet and containerd drive them, and churn on worker threads.

Each ADD attempt gets its own sandbox (a fresh network namespace and container id), as containerd makes a
new sandbox when kubelet retries; a failed ADD is torn down with DEL; a DEL that fails is retried later. The
driver remembers what each caller was told (`live`: the address an ADD answered; `deleting`: DELs still to
succeed), which is what `ledger.evaluate` holds the node to.
"""

from __future__ import annotations

import ipaddress
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vpccni.testbed.chaos.ledger import Finding, PodRef
from vpccni.testbed.cniexec import CniOutcome
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.noderunner import NodeRunner, Pod


@dataclass(kw_only=True)
class DriverCounts:
    adds_ok: int = 0
    adds_failed: int = 0
    dels_ok: int = 0
    dels_failed: int = 0
    add_seconds: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # first line of each distinct error → how often


class PodDriver:
    """Thread-safe. Pod names are unique per driver (`<prefix>-<n>`), so the datastore's pod metadata tells
    every pod apart although introspection scrubs container ids."""

    def __init__(self, runner: NodeRunner, *, namespace: str = "chaos", prefix: str = "p") -> None:
        self.runner = runner
        self.namespace = namespace
        self.prefix = prefix
        self.counts = DriverCounts()
        self.double_at_ack: list[Finding] = []
        self._live: dict[PodRef, IPv4Address] = {}
        self._deleting: dict[PodRef, IPv4Address | None] = {}
        # container id → a pod whose DEL succeeded (perhaps only into the DEL queue), and its address
        self._deleted: dict[str, tuple[PodRef, IPv4Address | None]] = {}
        self._sandboxes: dict[PodRef, Pod] = {}
        self._kept: list[Pod] = []
        self._busy: set[PodRef] = set()  # pods a thread is deleting now
        self._lock = threading.Lock()
        self._n = 0

    # --- what callers were told ----------------------------------------------------------------------------
    def live(self) -> dict[PodRef, IPv4Address]:
        with self._lock:
            return dict(self._live)

    def pending(self, queued: frozenset[str]) -> dict[PodRef, IPv4Address | None]:
        """Pods whose release may still be under way: a DEL that failed, or one waiting in the DEL queue
        (with the address their ADD answered; None for a failed ADD, which may still hold one)."""
        with self._lock:
            out = dict(self._deleting)
            out.update({ref: ip for cid, (ref, ip) in self._deleted.items() if cid in queued})
            return out

    def deleting(self) -> list[PodRef]:
        with self._lock:
            return list(self._deleting)

    def new_name(self) -> str:
        with self._lock:
            self._n += 1
            return f"{self.prefix}-{self._n}"

    # --- operations --------------------------------------------------------------------------------------
    def add(self, name: str, *, timeout_s: float = 60.0) -> tuple[PodRef | None, CniOutcome]:
        """One ADD attempt in a new sandbox; on failure the sandbox is torn down (DEL, namespace removed).
        A shim still running after `timeout_s` is killed, as a runtime gives up on it."""
        pod = self.runner.create_pod(namespace=self.namespace, name=name)
        ref = PodRef(namespace=pod.namespace, name=pod.name, container_id=pod.container_id, netns=pod.netns)
        outcome = self.runner.add(pod, timeout_s=timeout_s)
        if outcome.ok:
            ip = ipaddress.IPv4Interface(outcome.document["ips"][0]["address"]).ip
            with self._lock:
                self.counts.adds_ok += 1
                self.counts.add_seconds.append(outcome.elapsed_s)
                others = [p.label for p, held in self._live.items() if held == ip]
                if others:
                    self.double_at_ack.append(
                        Finding(
                            kind="double", subject=str(ip), detail=f"ADD gave it to {ref.label} and {others}"
                        )
                    )
                self._live[ref] = ip
                self._sandboxes[ref] = pod
            return ref, outcome
        self._note_error(outcome)
        with self._lock:
            self.counts.adds_failed += 1
            self._sandboxes[ref] = pod
            self._deleting[ref] = None
        self.delete(ref, timeout_s=timeout_s)
        return None, outcome

    def add_until(
        self,
        name: str,
        *,
        deadline: float,
        backoff_s: float = 0.5,
        give_up: Callable[[], bool] = lambda: False,
    ) -> tuple[PodRef | None, float, int]:
        """ADD attempts (each in a new sandbox) until one succeeds or `deadline` (monotonic) passes, as
        kubelet retries a pod's sandbox. Returns the pod, the seconds from the first attempt, the attempts."""
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            ref, _ = self.add(name)
            if ref is not None or time.monotonic() + backoff_s > deadline or give_up():
                return ref, time.monotonic() - started, attempts
            time.sleep(backoff_s)

    def delete(self, ref: PodRef, *, keep_sandbox: bool = False, timeout_s: float = 60.0) -> bool:
        """DEL with the ADD's result as prevResult; on success the sandbox goes (unless `keep_sandbox`: the
        runtime is slow to remove it, see `remove_kept`). False: the DEL failed and is retried later."""
        with self._lock:
            pod = self._sandboxes.get(ref)
            ip = self._live.pop(ref, None)
            if ref not in self._deleting:
                self._deleting[ref] = ip
            ip = self._deleting[ref]
            if pod is None or ref in self._busy:  # done, or another thread DELs it right now
                return pod is None
            self._busy.add(ref)
        try:
            outcome = self.runner.delete(pod, timeout_s=timeout_s)
        finally:
            with self._lock:
                self._busy.discard(ref)
        if not outcome.ok:
            self._note_error(outcome)
            with self._lock:
                self.counts.dels_failed += 1
            return False
        with self._lock:
            self.counts.dels_ok += 1
            self._deleting.pop(ref, None)
            self._sandboxes.pop(ref, None)
            self._deleted[ref.container_id] = (ref, ip)
            if keep_sandbox:
                self._kept.append(pod)
                return True
        self.runner.remove_pod(pod)
        return True

    def remove_kept(self) -> None:
        """Remove the sandboxes `delete(keep_sandbox=True)` left."""
        with self._lock:
            kept, self._kept = self._kept, []
        for pod in kept:
            self.runner.remove_pod(pod)

    def retry_deletes(self) -> int:
        """DEL again every pod whose DEL failed; returns how many still fail."""
        return sum(not self.delete(ref) for ref in self.deleting())

    def delete_all(self) -> int:
        """DEL every live pod and retry failed DELs; returns how many DELs still fail."""
        for ref in list(self.live()):
            self.delete(ref)
        return self.retry_deletes()

    def lose_sandboxes(self) -> list[PodRef]:
        """A node reboot: every sandbox's namespace is gone (the pods' veths with them). The pods stay live
        for the runtime until it DELs them (`delete`, with CNI_NETNS pointing at nothing)."""
        with self._lock:
            pods = list(self._sandboxes.values())
            refs = list(self._live) + list(self._deleting)
        for pod in pods:
            ns.delete_netns(pod.netns)
        return refs

    def check_all(self) -> list[tuple[PodRef, CniOutcome]]:
        """CHECK every live pod through the shim (with its ADD's result as prevResult)."""
        with self._lock:
            pods = [(ref, self._sandboxes[ref]) for ref in self._live if ref in self._sandboxes]
        return [(ref, self.runner.check(pod)) for ref, pod in pods]

    def random_live(self, rng: random.Random) -> PodRef | None:
        with self._lock:
            return rng.choice(list(self._live)) if self._live else None

    def _note_error(self, outcome: CniOutcome) -> None:
        self.note(outcome.error or f"exit {outcome.returncode}")

    def note(self, error: str) -> None:
        line = (error.splitlines() or [""])[0][:160]
        with self._lock:
            self.counts.errors[line] = self.counts.errors.get(line, 0) + 1


class Churn:
    """Worker threads adding and deleting pods in waves between `low` and `high` live pods (the pool grows
    and shrinks, so ENIs are attached and released). `pause()` returns once every worker finished its
    current operation; `resume()` lets them go on."""

    def __init__(self, driver: PodDriver, *, workers: int, low: int, high: int, seed: int) -> None:
        self._driver = driver
        self._workers = workers
        self._low, self._high = low, high
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._paused = True
        self._stopping = False
        self._idle = 0
        self._growing = True
        self._threads: list[threading.Thread] = []

    def start(self) -> Churn:
        for i in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"churn-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.resume()
        return self

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def pause(self, timeout_s: float = 120.0) -> bool:
        with self._cond:
            self._paused = True
            return self._cond.wait_for(lambda: self._idle == len(self._threads), timeout=timeout_s)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._stopping or not self._paused)
                self._idle -= 1
                if self._stopping:
                    return
            try:
                self._step()
            except Exception as exc:  # a harness failure must not stop the churn silently
                self._driver.note(f"churn step failed: {type(exc).__name__}: {exc}")

    def _step(self) -> None:
        count = len(self._driver.live())
        with self._cond:
            if count >= self._high:
                self._growing = False
            elif count <= self._low:
                self._growing = True
            growing = self._growing
            victim = None if growing else self._driver.random_live(self._rng)
        if victim is None:
            self._driver.add(self._driver.new_name())
        else:
            self._driver.delete(victim)
        if self._driver.deleting() and self._rng.random() < 0.2:
            self._driver.retry_deletes()
