"""What ipamd does for each CNI command the shim forwards: allocate, wire, verify, release, collect.

Every failure becomes a ``CNIError`` with the spec's code and a message that says what to do; the shim
prints it unchanged. Operations on one (container ID, interface) are serialised, different pods run
concurrently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vpccni.cniplugin import results, versions
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import NetConf, parse_netconf
from vpccni.cniplugin.version import VERSION
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.locks import KeyedLocks
from vpccni.ipamd.cni.multinic import MultiNicPods
from vpccni.ipamd.cni.netns_kind import NetnsKind, classify_netns
from vpccni.ipamd.cni.netpolicy import PolicyAdmission, admit_or_roll_back
from vpccni.ipamd.cni.ports import (
    BranchPods,
    ChainedPlugin,
    HostPodRules,
    MultiNicAllocator,
    NoAddressError,
    NotReady,
    PendingAllocation,
    PodAddressAllocator,
    PodAllocation,
    PodNetwork,
    PodRef,
)
from vpccni.ipamd.cni.result import build_result, prev_result_for_del, read_prev_result
from vpccni.networkutils.model import IPAddress
from vpccni.networkutils.names import (
    DEFAULT_VETH_PREFIX,
    attachment_veth_name,
    host_veth_name,
    multi_nic_ifname,
)
from vpccni.networkutils.pod import PodInterface

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    # An ADD waits at most this long for an address (less when the shim's own deadline is nearer).
    max_assign_timeout_s: float = 30.0
    # Stop waiting for the pool this long before the answer is due: time to wire the pod and answer.
    deadline_margin_s: float = 5.0


class CniService(MultiNicPods):
    """Handles one request at a time per attachment; ``handle`` is safe to call from many threads.

    ``multi_nic`` (ENABLE_MULTI_NIC) serves pods asking for one interface per network card (`multinic`);
    ``branches`` (ENABLE_POD_ENI) are asked first and answer for branch-ENI pods (`vpccni.ipamd.sgp`)."""

    def __init__(
        self,
        *,
        allocator: PodAddressAllocator,
        network: PodNetwork,
        host_rules: HostPodRules | None = None,
        branches: BranchPods | None = None,
        settings: ServiceSettings | None = None,
        classify_netns: Callable[[int], NetnsKind] = classify_netns,
        monotonic: Callable[[], float] = time.monotonic,
        policy: PolicyAdmission | None = None,
        multi_nic: MultiNicAllocator | None = None,
        chained: Mapping[str, ChainedPlugin] | None = None,
    ) -> None:
        self._policy = policy  # network policy's say before an ADD is answered (None: not in play)
        self._chained = dict(chained or {})
        # A chained plugin's interfaces in the pod (egress-cni's v4if0) do not keep its namespace alive.
        self._chained_ifnames = frozenset(name for c in self._chained.values() for name in c.pod_ifnames)
        self._allocator = allocator
        self._multi_nic = multi_nic
        self._network = network
        self._host_rules = host_rules
        self._branches = branches  # ENABLE_POD_ENI: asked first, they answer for branch-ENI pods
        self._settings = settings or ServiceSettings()
        self._classify_netns = classify_netns
        self._monotonic = monotonic
        self._locks = KeyedLocks()
        # By upstream host veth name: choosing a name and creating the veth are one step per name.
        self._veth_locks = KeyedLocks()

    # --- dispatch ---------------------------------------------------------------------------------------

    def handle(self, request: Request, netns_fd: int | None, *, answer_by: float | None = None) -> object:
        """The ``ok`` value for the shim (the result for ADD, None otherwise); raises ``CNIError``.

        ``answer_by`` (monotonic) is when the shim must have its answer; an ADD waits for the pool only
        until shortly before it (by default: the request's own timeout from now)."""
        if request.version != VERSION:
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER,
                f"aws-cni {request.version} cannot talk to ipamd {VERSION}: the node is between versions; "
                "this resolves once the aws-node rollout finishes (it reinstalls /opt/cni/bin/aws-cni)",
            )
        chained = self._chained_plugin(request)
        if chained is not None:
            return chained.handle(request, netns_fd, answer_by=answer_by)
        conf = parse_netconf(request.netconf)
        version = self._requested_version(request)
        if request.command == "ADD":
            if answer_by is None:
                answer_by = self._monotonic() + request.timeout_s
            return self.add(request, conf, version, netns_fd, answer_by=answer_by)
        if request.command == "DEL":
            self.delete(request, conf, version, netns_fd)
        elif request.command == "CHECK":
            self.check(request, conf, version, netns_fd)
        elif request.command == "STATUS":
            self.status()
        elif request.command == "GC":
            self.gc(conf)
        return None

    def abandon_add(self, request: Request, netns_fd: int | None) -> None:
        """Undo an ADD whose answer never reached the shim: the runtime counts it as failed, and a retried
        ADD into the same namespace must find it clean, so the veth goes too."""
        chained = self._chained_plugin(request)
        if chained is not None:
            chained.abandon_add(request, netns_fd)
            return
        try:
            conf = parse_netconf(request.netconf)
            self.delete(request, conf, self._requested_version(request), netns_fd, remove_veth=True)
        except CNIError as err:
            log.error("rolling back the undelivered ADD of %s failed: %s", request.container_id, err.msg)

    def delete_queued(self, request: Request) -> None:
        """A DEL the shim queued while ipamd was down (no netns fd; any shim version)."""
        chained = self._chained_plugin(request)
        if chained is not None:
            chained.delete_queued(request)
            return
        conf = parse_netconf(request.netconf)
        self.delete(request, conf, self._requested_version(request), None)

    def _chained_plugin(self, request: Request) -> ChainedPlugin | None:
        """The plugin serving the request's ``type`` when it is not aws-cni's (egress-cni)."""
        kind = request.netconf.get("type") if isinstance(request.netconf, dict) else None
        return self._chained.get(kind) if isinstance(kind, str) else None

    @staticmethod
    def _requested_version(request: Request) -> str:
        version = versions.canonical(request.cni_version or versions.LATEST)
        if version not in versions.SUPPORTED_VERSIONS:
            raise CNIError(ErrorCode.INCOMPATIBLE_CNI_VERSION, f"CNI version {version} is not supported")
        return version

    def _pod(self, request: Request, conf: NetConf) -> PodRef:
        return PodRef(
            network=conf.name,
            container_id=request.container_id,
            ifname=request.ifname,
            namespace=request.k8s_args.pod_namespace,
            name=request.k8s_args.pod_name,
        )

    def _spec(
        self, pod: PodRef, conf: NetConf | None, ip: IPAddress, route_table: int, host_veth: str = "",
        *, index: int | None = None,
    ) -> PodInterface:  # fmt: skip
        """``index``: a multi-NIC pod's interface (``eth0``, ``mNicIf1``...); else CNI_IFNAME's."""
        mtu = conf.mtu if conf is not None else 9001
        return PodInterface(
            host_veth=host_veth or pod.upstream_veth(_veth_prefix(conf), index=index),
            ip=ip,
            ifname=pod.ifname if index is None else multi_nic_ifname(pod.ifname, index),
            route_table=route_table,
            mtu=mtu,
            index=pod.index if index is None else index,
        )

    # --- host veth names ----------------------------------------------------------------------------------

    def _own_veth_name(self, pod: PodRef, conf: NetConf, *, index: int | None = None) -> str:
        """'' to use upstream's name for the pod, else a name of this attachment alone (recorded with the
        allocation): upstream's name is taken by another live attachment of the pod, or the pod has no
        name. Call under the upstream name's lock until the veth exists. ``index`` as for ``_spec``."""
        prefix = _veth_prefix(conf)
        ifname = pod.ifname if index is None else multi_nic_ifname(pod.ifname, index)
        own = attachment_veth_name(pod.container_id, ifname, prefix=prefix)
        if not pod.name:
            return own
        upstream = pod.upstream_veth(prefix, index=index)
        if not self._network.host_veth_exists(upstream):
            return ""
        holder = self._veth_holder(upstream, conf, but=(pod.container_id, pod.ifname))
        if holder is None:
            return ""  # a leftover of an attachment that is gone: wiring replaces it
        log.info(
            "host veth %s belongs to container %s (%s): %s gets %s",
            upstream, holder.key.container_id, holder.key.ifname, pod.label, own,
        )  # fmt: skip
        return own

    def _veth_holder(self, name: str, conf: NetConf | None, *, but: tuple[str, str]) -> PodAllocation | None:
        """The live allocation, other than the attachment ``but``, whose host veth is called ``name``."""
        prefix = _veth_prefix(conf)
        for entry in self._allocator.allocations():
            if (entry.key.container_id, entry.key.ifname) == but:
                continue
            meta = entry.metadata
            upstream = host_veth_name(meta.namespace, meta.name, index=entry.interface_index, prefix=prefix)
            if (entry.allocation.host_veth or upstream) == name:
                return entry
        return None

    def _may_delete_veth(self, pod: PodRef, conf: NetConf | None, spec: PodInterface) -> bool:
        """A veth is deleted by name only when no other live attachment goes by that name (a pod recreated
        under upstream's name while the old sandbox's DEL was still to come)."""
        return self._veth_holder(spec.host_veth, conf, but=(pod.container_id, pod.ifname)) is None

    def _need_netns(self, command: str, netns_fd: int | None) -> int:
        if netns_fd is None:
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                f"{command} needs the pod's network namespace (CNI_NETNS) and none was passed",
            )
        kind = self._classify_netns(netns_fd)
        if kind is NetnsKind.HOST:
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                "CNI_NETNS is ipamd's own (the host's) network namespace: refusing to wire it",
            )
        if kind is NetnsKind.OTHER:
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                "CNI_NETNS is not a network namespace (another kind of namespace or a plain file): pass the "
                "pod's network namespace, e.g. /var/run/netns/<name> or /proc/<pid>/ns/net",
            )
        return netns_fd

    # --- ADD ----------------------------------------------------------------------------------------------

    def add(
        self, request: Request, conf: NetConf, version: str, netns_fd: int | None, *, answer_by: float
    ) -> dict[str, Any]:
        fd = self._need_netns("ADD", netns_fd)
        if conf.requires_multi_nic_attachment:
            each_card = self._add_each_card(request, conf, version, fd, answer_by=answer_by)
            if each_card is not None:
                return each_card
        pod = self._pod(request, conf)
        # Read a chained plugin's result before touching anything: a bad one must not leave a wired pod.
        previous = results.to_current(conf.prev_result, conf.cni_version) if conf.prev_result else None
        with self._locks.hold((pod.container_id, pod.ifname)):
            if self._branches is not None:
                wait = self._assign_wait(answer_by)
                branch = self._branches.add(pod, conf, fd, request.netns_path, wait_s=wait)
                if branch is not None:
                    # Branch pods are asked about too, as upstream's plugin does after either wiring.
                    branches = self._branches
                    admit_or_roll_back(
                        self._policy, namespace=pod.namespace, name=pod.name, answer_by=answer_by - 1.0,
                        roll_back=lambda: branches.delete(pod, conf, conf.cni_version, fd, keep_veth=False),
                    )  # fmt: skip
                    return results.convert(self._after_prev_result(branch, previous), version)
            existing = self._allocator.lookup(
                network=pod.network, container_id=pod.container_id, ifname=pod.ifname
            )
            if existing is not None:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"{pod.label} already has interface {pod.ifname} with {existing.ip} on network "
                    f"{pod.network}: the runtime must DEL it before adding it again",
                )
            with self._veth_locks.hold(pod.upstream_veth(_veth_prefix(conf))):
                own_veth = self._own_veth_name(pod, conf)
                # The assignment's checkpoint write runs while the pod is wired; the answer waits for both.
                pending = self._assign(pod, answer_by, host_veth=own_veth)
                allocation = pending.allocation
                spec = self._spec(pod, conf, allocation.ip, allocation.route_table, own_veth)
                try:
                    wired = self._network.wire(fd, spec)
                except Exception as exc:
                    log.warning("wiring %s failed, rolling back: %s", pod.label, exc)
                    self._roll_back(pod, spec, fd, pending)
                    raise CNIError(
                        ErrorCode.INTERNAL, f"failed to set up the network of {pod.label}: {exc}"
                    ) from None
            try:
                pending.wait_written()
            except Exception as exc:  # the allocator already took the address back
                log.error("recording %s of %s failed, unwiring it: %s", allocation.ip, pod.label, exc)
                self._unwire_quietly(pod, spec, fd)
                raise
            admit_or_roll_back(
                self._policy, namespace=pod.namespace, name=pod.name, answer_by=answer_by - 1.0,
                roll_back=lambda: self._roll_back(pod, spec, fd, pending),
            )  # fmt: skip
            result = build_result(
                host_veth=wired.host_veth,
                host_mac=wired.host_mac,
                ifname=pod.ifname,
                netns_path=request.netns_path,
                ip=allocation.ip,
                route_table=allocation.route_table,
                device_number=allocation.device_number,
                pod_namespace=pod.namespace,
                pod_name=pod.name,
            )
            log.info(
                "ADD %s: %s on %s (table %d)", pod.label, allocation.ip, allocation.eni_id, spec.route_table
            )
        merged = self._after_prev_result(result, previous)
        for chained in self._chained.values():  # egress: wired now, listed for egress-cni to find
            merged["interfaces"] = [*merged["interfaces"], *chained.add_with_pod(request, fd, version)]
        return results.convert(merged, version)

    def _assign(self, pod: PodRef, answer_by: float, *, host_veth: str) -> PendingAllocation:
        with self._allocation_errors():
            return self._allocator.assign_pending(
                network=pod.network,
                container_id=pod.container_id,
                ifname=pod.ifname,
                pod_namespace=pod.namespace,
                pod_name=pod.name,
                timeout_s=self._assign_wait(answer_by),
                host_veth=host_veth,
            )

    @staticmethod
    @contextmanager
    def _allocation_errors() -> Iterator[None]:
        """The allocator's refusals as CNI errors: not ready, and a pool that can still grow, are 11."""
        try:
            yield
        except NotReady as exc:
            raise CNIError(ErrorCode.TRY_AGAIN_LATER, f"ipamd is not ready yet: {exc}") from None
        except NoAddressError as exc:
            code = ErrorCode.TRY_AGAIN_LATER if exc.retryable else ErrorCode.INTERNAL
            raise CNIError(code, str(exc)) from None

    def _assign_wait(self, answer_by: float) -> float:
        """How long an ADD may wait (for the pool, for a branch ENI): until shortly before its answer is due,
        and capped."""
        left = answer_by - self._monotonic() - self._settings.deadline_margin_s
        return max(0.0, min(self._settings.max_assign_timeout_s, left))

    def _unwire_quietly(self, pod: PodRef, spec: PodInterface, fd: int) -> None:
        try:
            self._network.unwire(spec, fd)
        except Exception as exc:  # what follows must still happen
            log.error("rollback of %s: unwiring failed: %s", pod.label, exc)

    def _roll_back(self, pod: PodRef, spec: PodInterface, fd: int, pending: PendingAllocation) -> None:
        self._unwire_quietly(pod, spec, fd)
        try:
            pending.wait_written()  # release after the assignment's own write, never before it
        except Exception:
            return  # the write failed: the allocator already took the address back
        self._allocator.release(
            network=pod.network, container_id=pod.container_id, ifname=pod.ifname,
            pod_namespace=pod.namespace, pod_name=pod.name, reason="SetupNSFailed",
        )  # fmt: skip

    @staticmethod
    def _after_prev_result(result: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        """Chained after another plugin: its result first, ours appended (spec: output prevResult too)."""
        if previous is None:
            return result
        merged = previous
        offset = len(merged.get("interfaces") or [])
        merged["interfaces"] = list(merged.get("interfaces") or []) + result["interfaces"]
        for ip in result["ips"]:
            ip["interface"] += offset
        merged["ips"] = list(merged.get("ips") or []) + result["ips"]
        merged.setdefault("dns", {})
        return merged

    # --- DEL ----------------------------------------------------------------------------------------------

    def delete(
        self, request: Request, conf: NetConf, version: str, netns_fd: int | None, *,
        remove_veth: bool = False,
    ) -> None:  # fmt: skip
        """Tear down and release; succeeds when repeated, when nothing was added, when the netns is gone.
        The veth is left to go with the pod's namespace when that is at hand, unless ``remove_veth``."""
        pod = self._pod(request, conf)
        with self._locks.hold((pod.container_id, pod.ifname)):
            # With the pod's netns at hand its veth goes with the namespace, as upstream lets it.
            in_pod = netns_fd is not None and self._classify_netns(netns_fd) is NetnsKind.POD
            pod_fd = netns_fd if in_pod else None
            keep_veth = in_pod and not remove_veth
            if self._branches is not None and self._branches.delete(
                pod, conf, version, pod_fd, keep_veth=keep_veth
            ):
                return
            if self._delete_each_card(pod, conf, version, netns_fd, remove_veth=remove_veth):
                return
            allocation = self._allocator.lookup(
                network=pod.network, container_id=pod.container_id, ifname=pod.ifname
            )
            spec = None
            if allocation is not None:
                spec = self._spec(pod, conf, allocation.ip, allocation.route_table, allocation.host_veth)
            else:
                spec = self._spec_from_prev_result(pod, conf, version)
            if spec is not None:
                try:
                    keep = keep_veth or not self._may_delete_veth(pod, conf, spec)
                    self._network.unwire(spec, pod_fd, keep_veth=keep, siblings=self._chained_ifnames)
                except Exception as exc:
                    # Keep the address allocated: releasing it with rules left behind could misroute the
                    # next pod that gets it. The runtime retries DEL.
                    raise CNIError(
                        ErrorCode.TRY_AGAIN_LATER, f"could not remove the network of {pod.label}: {exc}"
                    ) from None
            self._allocator.release(
                network=pod.network, container_id=pod.container_id, ifname=pod.ifname,
                pod_namespace=pod.namespace, pod_name=pod.name,
            )  # fmt: skip
        for chained in self._chained.values():
            chained.forget(request, netns_fd, remove_veth=remove_veth)
        log.info("DEL %s: %s", pod.label, f"released {allocation.ip}" if allocation else "nothing allocated")

    def _spec_from_prev_result(self, pod: PodRef, conf: NetConf, version: str) -> PodInterface | None:
        """Without an allocation (e.g. lost state) the prevResult still says which rules to remove, unless
        its address now belongs to another pod."""
        prev = prev_result_for_del(conf.prev_result, version, pod.ifname, pod.label)
        if prev is None or prev.vlan_id:
            return None
        if any(a.allocation.ip == prev.ip for a in self._allocator.allocations()) or (
            self._branches is not None and prev.ip in self._branches.addresses()
        ):
            log.info(
                "DEL %s: %s from prevResult now belongs to another pod: leaving it alone",
                pod.label,
                prev.ip,
            )
            return None
        return self._spec(pod, conf, prev.ip, prev.route_table, prev.host_veth)

    # --- CHECK ----------------------------------------------------------------------------------------------

    def check(self, request: Request, conf: NetConf, version: str, netns_fd: int | None) -> None:
        fd = self._need_netns("CHECK", netns_fd)
        pod = self._pod(request, conf)
        with self._locks.hold((pod.container_id, pod.ifname)):
            drift = self._branches.check(pod, conf, fd) if self._branches is not None else None
            if drift:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"CHECK failed for {pod.label} (branch ENI): " + "; ".join(drift),
                    "the pod's network drifted from what ADD set up; recreate the pod sandbox",
                )
            if drift is not None or self._check_each_card(pod, conf, version, fd):
                return
            allocation = self._allocator.lookup(
                network=pod.network, container_id=pod.container_id, ifname=pod.ifname
            )
            if allocation is None:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"CHECK: ipamd has no address for {pod.label} on network {pod.network}: the ADD did not "
                    "complete or the pod was deleted; recreate the pod sandbox",
                )
            if conf.prev_result:
                prev = read_prev_result(results.to_current(conf.prev_result, version), pod.ifname)
                if prev is not None and prev.ip != allocation.ip:
                    raise CNIError(
                        ErrorCode.INTERNAL,
                        f"CHECK: prevResult says {pod.label} has {prev.ip} but ipamd allocated "
                        f"{allocation.ip}: recreate the pod sandbox",
                    )
            spec = self._spec(pod, conf, allocation.ip, allocation.route_table, allocation.host_veth)
            problems = self._network.verify(fd, spec)
        if problems:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"CHECK failed for {pod.label} ({allocation.ip}): " + "; ".join(problems),
                "the pod's network drifted from what ADD set up; recreate the pod sandbox",
            )

    # --- STATUS and GC -----------------------------------------------------------------------------------

    def status(self) -> None:
        ready, reason = self._allocator.readiness()
        if not ready:
            raise CNIError(ErrorCode.NOT_AVAILABLE, f"aws-cni cannot add pods now: {reason}")

    def gc(self, conf: NetConf) -> None:
        """Release every allocation of this network, and every pod rule of no allocation, that is not one
        of the runtime's ``cni.dev/valid-attachments``. Keeps going on errors and reports them all."""
        if conf.valid_attachments is None:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                "GC needs cni.dev/valid-attachments (an empty list means: collect everything)",
            )
        keep = set(conf.valid_attachments)
        errors = self._branches.collect(conf.name, keep) if self._branches is not None else []
        for entry in self._allocator.allocations():
            key = entry.key
            if key.network_name != conf.name or (key.container_id, key.ifname) in keep:
                continue
            pod = PodRef(
                network=key.network_name, container_id=key.container_id, ifname=key.ifname,
                namespace=entry.metadata.namespace, name=entry.metadata.name,
            )  # fmt: skip
            with self._locks.hold((pod.container_id, pod.ifname)):
                alloc = entry.allocation
                # A multi-NIC pod's interfaces above 0 are entries of the same key on other cards.
                index = alloc.interface or None
                spec = self._spec(pod, conf, alloc.ip, alloc.route_table, alloc.host_veth, index=index)
                try:
                    self._network.unwire(spec, None, keep_veth=not self._may_delete_veth(pod, conf, spec))
                except Exception as exc:
                    errors.append(f"{pod.label}: {exc}")
                    continue
                self._allocator.release(
                    network=pod.network, container_id=pod.container_id, ifname=pod.ifname,
                    pod_namespace=pod.namespace, pod_name=pod.name, reason="GarbageCollected",
                )  # fmt: skip
                log.info("GC released %s (%s)", pod.label, entry.allocation.ip)
        if self._host_rules is not None:
            owned: set[IPAddress] = {a.allocation.ip for a in self._allocator.allocations()}
            owned |= self._branches.addresses() if self._branches is not None else set()
            for ip in sorted(self._host_rules.pod_rule_addresses() - owned, key=_address_order):
                try:
                    removed = self._host_rules.remove_pod_rules(ip)
                    log.info("GC removed %d host rules of %s, which no pod owns", removed, ip)
                except Exception as exc:
                    errors.append(f"rules of {ip}: {exc}")
        if errors:
            raise CNIError(ErrorCode.INTERNAL, "GC could not collect everything: " + "; ".join(errors))


def _address_order(ip: IPAddress) -> tuple[int, int]:
    return ip.version, int(ip)


def _veth_prefix(conf: NetConf | None) -> str:
    return conf.veth_prefix if conf is not None else DEFAULT_VETH_PREFIX
