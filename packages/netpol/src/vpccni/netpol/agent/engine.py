"""The agent's core: from this node's pods and every PolicyEndpoint to the kernel table, and the CNI's
strict-mode admissions.

One worker thread owns the table. Any change (a pod, a PolicyEndpoint, an admission) bumps a requested
generation; the worker computes every local pod's effective policy from the current snapshots, writes the
table when it differs from the last one written, and publishes the generation it covered. `enforce` (the
CNI's EnforceNpToPod) returns once a generation that includes its pod is in the kernel.

Restart safety: the kernel table outlives the agent. Until both caches are synced nothing is rewritten (an
empty snapshot would open every pod); a strict admission in that window only adds its pod's drop entries to
the existing table. The pods admitted in strict mode are read back from the table's `strict-pods` set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vpccni.k8sapi.model import PodInfo
from vpccni.netpol.agent.conntrack import Conntrack, ConntrackJanitor
from vpccni.netpol.agent.effective import DirectionPolicy, LocalPod, PodPolicy, effective_policy
from vpccni.netpol.agent.interfaces import PodInterfaces
from vpccni.netpol.agent.roundcache import RoundCache
from vpccni.netpol.agent.ruleset import Compiled, Ruleset, build_ruleset
from vpccni.netpol.agent.tables import PolicyTables
from vpccni.netpol.kube import Key, ObjectCache
from vpccni.netpol.model import PolicyEndpoint
from vpccni.netpol.settings import EnforcingMode
from vpccni.networkutils.names import host_veth_name

log = logging.getLogger(__name__)

_FINISHED = ("Succeeded", "Failed")
# How long an admitted pod that the pod watch has not shown yet keeps its strict entry.
ADMISSION_GRACE_S = 120.0
# How long `enforce` waits for the pod to appear in the watch before deciding without its labels.
POD_LOOKUP_S = 1.0


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    mode: EnforcingMode = EnforcingMode.STANDARD
    veth_prefix: str = "eni"
    enforce_timeout_s: float = 5.0


@dataclass(frozen=True, kw_only=True)
class _Admission:
    veth: str
    strict: bool
    at: float


@dataclass(frozen=True, kw_only=True)
class ApplyStats:
    generation: int
    pods: int
    chains: int
    elements: int
    written: bool
    seconds: float


class PolicyEngine:
    def __init__(
        self,
        *,
        tables: PolicyTables,
        pods: ObjectCache[PodInfo],
        policy_endpoints: ObjectCache[PolicyEndpoint],
        conntrack: Conntrack,
        interfaces: PodInterfaces,
        settings: EngineSettings,
        clock: Callable[[], float] = time.monotonic,
        on_apply: Callable[[ApplyStats], None] | None = None,
    ) -> None:
        self._tables = tables
        self._pods = pods
        self._pes = policy_endpoints
        self._janitor = ConntrackJanitor(conntrack)
        self._interfaces = interfaces
        self._settings = settings
        self._clock = clock
        self._on_apply = on_apply
        self._cond = threading.Condition()
        self._requested = 0
        self._applied = 0
        self._admitted: dict[Key, _Admission] = {}
        self._recovered_strict: frozenset[str] = frozenset()
        self._last: Ruleset | None = None
        self._policies: dict[Key, PodPolicy] = {}
        self._addresses: tuple[set[str], set[str]] = (set(), set())  # local pods', single-address peers'
        self._seen: set[Key] = set()
        self._directions: RoundCache[DirectionPolicy] = RoundCache()
        self._compiled: RoundCache[Compiled] = RoundCache()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Read back the strict admissions from the kernel, then start the worker."""
        self._recovered_strict = self._tables.strict_pods() or frozenset()
        if self._recovered_strict:
            log.info("found %d pods admitted in strict mode in the kernel table", len(self._recovered_strict))
        self._pods.listen(self._on_change)
        self._pes.listen(self._on_change)
        self._janitor.start()
        self._thread = threading.Thread(target=self._run, name="policy-engine", daemon=True)
        self._thread.start()
        self.changed()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._janitor.stop()

    def drain_conntrack(self, timeout_s: float) -> bool:
        """Wait until the conntrack deletions asked for so far are done."""
        return self._janitor.drain(timeout_s)

    @property
    def synced(self) -> bool:
        return self._pods.synced.is_set() and self._pes.synced.is_set()

    @property
    def applied_generation(self) -> int:
        with self._cond:
            return self._applied

    def _on_change(self, _: object) -> None:
        self.changed()

    def changed(self) -> int:
        """Ask for a new round; returns the generation that will include everything known now."""
        with self._cond:
            self._requested += 1
            self._cond.notify_all()
            return self._requested

    def wait_applied(self, generation: int, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._applied >= generation, timeout=timeout_s)

    # -- the CNI's calls ------------------------------------------------------------------------------
    def enforce(self, namespace: str, name: str, *, strict: bool | None = None) -> bool:
        """EnforceNpToPod: the pod's policy (or, strict and unselected, deny both ways) is in the kernel when
        this returns True. `strict` None takes the agent's mode."""
        strict = self._settings.mode is EnforcingMode.STRICT if strict is None else strict
        key = (namespace, name)
        veth = host_veth_name(namespace, name, prefix=self._settings.veth_prefix)
        with self._cond:
            self._admitted[key] = _Admission(veth=veth, strict=strict, at=self._clock())
        if not self.synced:
            if strict:
                self._tables.add_strict_pod(veth)
                log.info(
                    "strict admission of %s/%s before the caches synced: denied until its policy is in", *key
                )
            return True
        if self._pods.get(key) is None:
            if not strict:
                return True  # standard: open until a policy is known to select it; the watch will tell
            self._wait_for_pod(key)
        return self.wait_applied(self.changed(), self._settings.enforce_timeout_s)

    def forget(self, namespace: str, name: str) -> None:
        """DeletePodNp: the pod is gone; its entries go with the next round."""
        with self._cond:
            self._admitted.pop((namespace, name), None)
        self.changed()

    def _wait_for_pod(self, key: Key) -> None:
        deadline = self._clock() + POD_LOOKUP_S
        while self._pods.get(key) is None and self._clock() < deadline and not self._stop.is_set():
            time.sleep(0.02)

    # -- introspection -------------------------------------------------------------------------------
    def policy_of(self, namespace: str, name: str) -> PodPolicy | None:
        with self._cond:
            return self._policies.get((namespace, name))

    def policies(self) -> list[PodPolicy]:
        with self._cond:
            return [self._policies[k] for k in sorted(self._policies)]

    @property
    def ruleset(self) -> Ruleset | None:
        with self._cond:
            return self._last

    # -- the worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stop.is_set() or (self._requested > self._applied and self.synced),
                    timeout=0.5,
                )
                if self._stop.is_set():
                    return
                if not (self._requested > self._applied and self.synced):
                    continue
                generation = self._requested
            try:
                self.apply_once(generation)
                self.last_error = ""
            except Exception as exc:  # keep the old table; the next change or the retry tries again
                self.last_error = str(exc)
                log.error("writing the policy table failed (the previous table stays in force): %s", exc)
                self._stop.wait(1.0)
                self.changed()

    def _local_pods(self, now: float) -> tuple[list[LocalPod], set[Key]]:
        """This node's pods with their own network (the watch's, plus admitted ones it has not shown yet),
        and which of them are strict."""
        prefix = self._settings.veth_prefix
        infos = [i for i in self._pods.values() if not i.host_network and i.phase not in _FINISHED]
        upstream = {i.key: host_veth_name(i.namespace, i.name, prefix=prefix) for i in infos}
        routed = self._interfaces.by_address()
        taken = set(upstream.values())
        pods: dict[Key, LocalPod] = {}
        for info in infos:
            ips = tuple(str(ip) for ip in info.pod_ips)
            # A route to the pod's address through a link that is no pod's upstream name: ipamd named the
            # veth after the attachment. (A link that is another pod's name means the address went to that
            # pod: it is that pod's, not this one's.)
            other = tuple(
                sorted({routed[ip] for ip in ips if routed.get(ip, upstream[info.key]) not in taken})
            )
            pods[info.key] = LocalPod(
                namespace=info.namespace,
                name=info.name,
                labels=dict(info.labels),
                veth=upstream[info.key],
                ips=ips,
                other_veths=other,
            )
        with self._cond:
            if self._recovered_strict:  # the first round after a restart: strict pods the kernel remembers
                for key, pod in pods.items():
                    if self._recovered_strict.intersection(pod.veths) and key not in self._admitted:
                        self._admitted[key] = _Admission(veth=pod.veth, strict=True, at=now)
                self._recovered_strict = frozenset()
            for key, adm in list(self._admitted.items()):
                if key in pods:
                    continue
                if key in self._seen or now - adm.at > ADMISSION_GRACE_S:
                    del self._admitted[key]  # deleted since, or never showed up
                elif adm.strict:  # labels unknown yet: denied until the watch shows the pod
                    pods[key] = LocalPod(namespace=key[0], name=key[1], labels={}, veth=adm.veth)
            self._seen = {info.key for info in self._pods.values()}
            strict = {k for k, a in self._admitted.items() if a.strict and k in pods}
        return [pods[k] for k in sorted(pods)], strict

    def apply_once(self, generation: int) -> ApplyStats:
        started = self._clock()
        pods, strict = self._local_pods(started)
        pes = self._pes.values()
        policies = {
            (p.namespace, p.name): effective_policy(
                p, pes, strict=(p.namespace, p.name) in strict, cache=self._directions
            )
            for p in pods
        }
        ruleset = build_ruleset(
            policies.values(),
            strict_pods=sorted(v for k in strict for v in policies[k].pod.veths),
            cache=self._compiled,
        )
        self._directions.end_round()
        self._compiled.end_round()
        written = ruleset != self._last
        if written:
            self._tables.apply(ruleset)
        pods_gone, peers_gone = self._vanished_addresses(policies.values())
        with self._cond:
            self._last = ruleset
            self._policies = policies
            self._applied = max(self._applied, generation)
            self._cond.notify_all()
        if pods_gone or peers_gone:
            self._janitor.submit(pods=pods_gone, peers=peers_gone)
        stats = ApplyStats(
            generation=generation,
            pods=len(pods),
            chains=len(ruleset.chains),
            elements=ruleset.element_count,
            written=written,
            seconds=self._clock() - started,
        )
        if written:
            log.info(
                "policy table written: %d pods, %d chains, %d set elements in %.1f ms",
                stats.pods, stats.chains, stats.elements, stats.seconds * 1000,
            )  # fmt: skip
        if self._on_apply is not None:
            self._on_apply(stats)
        return stats

    def _vanished_addresses(self, policies: Iterable[PodPolicy]) -> tuple[list[str], list[str]]:
        """Addresses that had a say in this node's table and no longer have: local pods' own, and single
        addresses a rule allowed (pod peers). Their conntrack entries go, so a flow allowed for an old pod is
        never inherited by the next pod given its address, and a flow a tightened policy no longer allows
        does not live on (a flow still allowed re-enters conntrack with its next packet)."""
        pods: set[str] = set()
        peers: set[str] = set()
        seen: set[int] = set()
        for policy in policies:
            pods.update(policy.pod.ips)
            for direction in (policy.ingress, policy.egress):
                if id(direction) in seen:  # directions are shared between pods with the same policies
                    continue
                seen.add(id(direction))
                peers.update(
                    str(r.endpoint.cidr.network_address)
                    for r in direction.rules
                    if r.endpoint.cidr.prefixlen == r.endpoint.cidr.max_prefixlen
                )
        (pods_before, peers_before), self._addresses = self._addresses, (pods, peers)
        return sorted(pods_before - pods), sorted(peers_before - peers - pods)
