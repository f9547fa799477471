"""Pods with one interface per network card (ENABLE_MULTI_NIC and the pod annotation
``k8s.amazonaws.com/nicConfig: multi-nic-attachment``): ADD, DEL and CHECK of every interface.

Interface i is on the i-th managed card (ascending) and is upstream's in every name and number: inside the
pod ``eth0`` (CNI_IFNAME), then ``mNicIf1``, ``mNicIf2``...; host veth ``eni`` + sha1("<ns>.<pod>.<i>") for
i > 0; gateway 169.254.1.(i+1) with the default route of pod table i, which a ``from <address>`` rule at
priority 1 selects; on the host the usual 512 and 1536 rules, 1536 into the ENI's table on that card
(10000 + device + 100 * card). One ADD wires all of them or none: a card without an address, a wiring
failure or a failed checkpoint write undoes every interface made and gives every address back.

DEL and CHECK find the interfaces from ipamd's allocations (one per card under the pod's one key), or from
the prevResult when ipamd lost them. GC needs nothing here: each allocation carries its interface number.

This is `CniService`'s multi-NIC half, in its own module: the methods run on the service, with its locks and
helpers (declared below for the type checker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING, Any

from vpccni.cniplugin import results
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import MULTI_NIC_ANNOTATION, MULTI_NIC_VALUE, NetConf
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.cni.netpolicy import PolicyAdmission, admit_or_roll_back
from vpccni.ipamd.cni.ports import Allocation, MultiNicAllocator, PendingAllocation, PodRef
from vpccni.ipamd.cni.result import (
    PreviousAttachment,
    ResultInterface,
    build_interfaces_result,
    read_prev_interfaces,
)
from vpccni.networkutils.model import IPAddress
from vpccni.networkutils.names import MULTI_NIC_IFNAME_PREFIX
from vpccni.networkutils.pod import PodInterface, WiredPod

if TYPE_CHECKING:
    from vpccni.ipamd.cni.locks import KeyedLocks
    from vpccni.ipamd.cni.ports import PodAddressAllocator, PodNetwork

log = logging.getLogger(__name__)


class MultiNicPods:
    """The multi-NIC methods of `vpccni.ipamd.cni.service.CniService` (a base class of it)."""

    if TYPE_CHECKING:
        _allocator: PodAddressAllocator
        _multi_nic: MultiNicAllocator | None
        _policy: PolicyAdmission | None
        _network: PodNetwork
        _locks: KeyedLocks
        _veth_locks: KeyedLocks
        _classify_netns: Callable[[int], NetnsKind]

        def _pod(self, request: Request, conf: NetConf) -> PodRef: ...

        def _spec(
            self, pod: PodRef, conf: NetConf | None, ip: IPAddress, route_table: int, host_veth: str = "",
            *, index: int | None = None,
        ) -> PodInterface: ...  # fmt: skip

        def _own_veth_name(self, pod: PodRef, conf: NetConf, *, index: int | None = None) -> str: ...

        def _may_delete_veth(self, pod: PodRef, conf: NetConf | None, spec: PodInterface) -> bool: ...

        def _assign_wait(self, answer_by: float) -> float: ...

        @staticmethod
        def _allocation_errors() -> AbstractContextManager[None]: ...

        def _unwire_quietly(self, pod: PodRef, spec: PodInterface, fd: int) -> None: ...

        @staticmethod
        def _after_prev_result(result: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]: ...

    # --- ADD ----------------------------------------------------------------------------------------------

    def _add_each_card(
        self, request: Request, conf: NetConf, version: str, fd: int, *, answer_by: float
    ) -> dict[str, Any] | None:
        """The result for a pod that asked for one interface per card; None on a node with one managed card
        (the pod gets its one interface as any pod does, as upstream's)."""
        pod = self._pod(request, conf)
        multi = self._multi_nic
        if multi is None:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"{pod.label} asks for one interface per network card ({MULTI_NIC_ANNOTATION}: "
                f"{MULTI_NIC_VALUE}) but ENABLE_MULTI_NIC is not true on this node: set "
                "ENABLE_MULTI_NIC=true on aws-node (on an instance type with several network cards) or "
                "remove the annotation",
            )
        count = len(multi.cards)
        if count == 1:
            return None
        previous = results.to_current(conf.prev_result, conf.cni_version) if conf.prev_result else None
        with self._locks.hold((pod.container_id, pod.ifname)):
            existing = multi.lookup_each_card(
                network=pod.network, container_id=pod.container_id, ifname=pod.ifname
            )
            if existing:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"{pod.label} already has interface {pod.ifname} with {existing[0].ip} on network "
                    f"{pod.network}: the runtime must DEL it before adding it again",
                )
            with ExitStack() as held:
                for name in sorted({pod.upstream_veth(conf.veth_prefix, index=i) for i in range(count)}):
                    held.enter_context(self._veth_locks.hold(name))
                own = [self._own_veth_name(pod, conf, index=i) for i in range(count)]
                with self._allocation_errors():
                    taken = multi.assign_each_card_pending(
                        network=pod.network, container_id=pod.container_id, ifname=pod.ifname,
                        pod_namespace=pod.namespace, pod_name=pod.name,
                        timeout_s=self._assign_wait(answer_by), host_veths=own,
                    )  # fmt: skip
                specs = [self._interface_spec(pod, conf, p.allocation) for p in taken]
                wired = self._wire_each(pod, specs, fd, taken)
            self._wait_each_written(pod, specs, fd, taken)
            admit_or_roll_back(
                self._policy, namespace=pod.namespace, name=pod.name, answer_by=answer_by - 1.0,
                roll_back=lambda: self._undo_each(pod, specs, fd, taken),
            )  # fmt: skip
            interfaces = [
                ResultInterface(
                    host_veth=w.host_veth,
                    host_mac=w.host_mac,
                    ifname=s.ifname,
                    ip=s.ip,
                    route_table=s.route_table,
                )
                for w, s in zip(wired, specs, strict=True)
            ]
            result = build_interfaces_result(
                interfaces,
                netns_path=request.netns_path,
                device_number=taken[0].allocation.device_number,
                pod_namespace=pod.namespace,
                pod_name=pod.name,
            )
            log.info("ADD %s: %s", pod.label, _describe(specs, [p.allocation for p in taken]))
        return results.convert(self._after_prev_result(result, previous), version)

    def _interface_spec(self, pod: PodRef, conf: NetConf | None, allocation: Allocation) -> PodInterface:
        return self._spec(
            pod,
            conf,
            allocation.ip,
            allocation.route_table,
            allocation.host_veth,
            index=allocation.interface,
        )

    def _wire_each(
        self, pod: PodRef, specs: Sequence[PodInterface], fd: int, taken: Sequence[PendingAllocation]
    ) -> list[WiredPod]:
        wired: list[WiredPod] = []
        for spec in specs:
            try:
                wired.append(self._network.wire(fd, spec))
            except Exception as exc:
                log.warning(
                    "wiring %s of %s failed, rolling back every interface: %s", spec.ifname, pod.label, exc
                )
                self._undo_each(pod, specs[: len(wired) + 1], fd, taken)
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"failed to set up interface {spec.ifname} ({spec.ip}) of {pod.label}: {exc}",
                ) from None
        return wired

    def _wait_each_written(
        self, pod: PodRef, specs: Sequence[PodInterface], fd: int, taken: Sequence[PendingAllocation]
    ) -> None:
        for pending in taken:
            try:
                pending.wait_written()
            except Exception as exc:  # that card took its address back; the others go back here
                log.error(
                    "recording %s of %s failed, unwiring it all: %s", pending.allocation.ip, pod.label, exc
                )
                self._undo_each(pod, specs, fd, taken)
                raise

    def _undo_each(
        self, pod: PodRef, specs: Sequence[PodInterface], fd: int, taken: Sequence[PendingAllocation]
    ) -> None:
        for spec in specs:
            self._unwire_quietly(pod, spec, fd)
        for pending in taken:
            try:
                pending.wait_written()  # release after the assignment's own write, never before it
            except Exception:
                continue  # the write failed: that card already took the address back
        self._release_each(pod, reason="SetupNSFailed")

    # --- DEL ----------------------------------------------------------------------------------------------

    def _delete_each_card(
        self, pod: PodRef, conf: NetConf, version: str, netns_fd: int | None, *, remove_veth: bool
    ) -> bool:
        """DEL of a pod with an interface per card, under its attachment's lock; False for any other pod.
        Rules, routes and (without the pod's netns, or with ``remove_veth``) veths of every interface go,
        then every card's address."""
        specs = self._each_card_specs(pod, conf, version)
        if specs is None:
            return False
        in_pod = netns_fd is not None and self._classify_netns(netns_fd) is NetnsKind.POD
        for spec in specs:
            keep = (in_pod and not remove_veth) or not self._may_delete_veth(pod, conf, spec)
            try:
                self._network.unwire(
                    spec, netns_fd if in_pod else None, keep_veth=keep, siblings=[s.ifname for s in specs]
                )
            except Exception as exc:
                # Keep the addresses: releasing them with rules left behind could misroute the next pod.
                raise CNIError(
                    ErrorCode.TRY_AGAIN_LATER,
                    f"could not remove interface {spec.ifname} ({spec.ip}) of {pod.label}: {exc}",
                ) from None
        self._release_each(pod)
        log.info(
            "DEL %s: %d interfaces, %s released", pod.label, len(specs), ", ".join(str(s.ip) for s in specs)
        )
        return True

    def _each_card_specs(self, pod: PodRef, conf: NetConf, version: str) -> list[PodInterface] | None:
        """Every interface of a multi-NIC attachment; None for an attachment with one interface.

        From ipamd's allocations; interfaces they lack (ENABLE_MULTI_NIC turned off since, lost state) come
        from the prevResult, unless their address now belongs to another pod."""
        known = self._lookup_each(pod)
        if len(known) > 1:
            return [self._interface_spec(pod, conf, a) for a in known]
        if (known and self._multi_nic is not None) or not _lists_other_cards(conf):
            return None  # the common case, decided without reading the prevResult
        listed = self._prev_interfaces(pod, conf, version)
        if len(listed) < 2 or (known and known[0].ip != listed[0].ip):
            return None
        others = {
            a.allocation.ip
            for a in self._allocator.allocations()
            if (a.key.container_id, a.key.ifname) != (pod.container_id, pod.ifname)
        }
        specs = [self._interface_spec(pod, conf, a) for a in known]
        for index, prev in enumerate(listed[len(known) :], start=len(known)):
            if prev.ip in others:
                log.info(
                    "DEL %s: %s from prevResult now belongs to another pod: leaving it", pod.label, prev.ip
                )
                continue
            specs.append(self._spec(pod, conf, prev.ip, prev.route_table, prev.host_veth, index=index))
        return specs

    def _lookup_each(self, pod: PodRef) -> tuple[Allocation, ...]:
        key = {"network": pod.network, "container_id": pod.container_id, "ifname": pod.ifname}
        if self._multi_nic is not None:
            return self._multi_nic.lookup_each_card(**key)
        one = self._allocator.lookup(**key)
        return () if one is None else (one,)

    def _prev_interfaces(self, pod: PodRef, conf: NetConf, version: str) -> tuple[PreviousAttachment, ...]:
        if not conf.prev_result:
            return ()
        try:
            return read_prev_interfaces(results.to_current(conf.prev_result, version), pod.ifname)
        except CNIError as exc:
            log.warning("%s: unreadable prevResult ignored: %s", pod.label, exc.msg)
            return ()

    def _release_each(self, pod: PodRef, *, reason: str = "PodDeleted") -> None:
        """Every card's address of the pod (the card allocator's release covers them all)."""
        releaser = self._multi_nic or self._allocator
        releaser.release(
            network=pod.network, container_id=pod.container_id, ifname=pod.ifname,
            pod_namespace=pod.namespace, pod_name=pod.name, reason=reason,
        )  # fmt: skip

    # --- CHECK --------------------------------------------------------------------------------------------

    def _check_each_card(self, pod: PodRef, conf: NetConf, version: str, fd: int) -> bool:
        """CHECK of a pod with an interface per card (under its lock); False for any other pod."""
        known = self._multi_nic.lookup_each_card(
            network=pod.network, container_id=pod.container_id, ifname=pod.ifname
        ) if self._multi_nic is not None else ()  # fmt: skip
        if len(known) < 2:
            return False
        if conf.prev_result:
            listed = [p.ip for p in self._prev_interfaces(pod, conf, version)]
            have = [a.ip for a in known]
            if listed != have:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"CHECK: prevResult says {pod.label} has {_addresses(listed)} but ipamd allocated "
                    f"{_addresses(have)}: recreate the pod sandbox",
                )
        problems: list[str] = []
        for allocation in known:
            spec = self._interface_spec(pod, conf, allocation)
            problems.extend(f"{spec.ifname}: {p}" for p in self._network.verify(fd, spec))
        if problems:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"CHECK failed for {pod.label} ({_addresses(a.ip for a in known)}): " + "; ".join(problems),
                "the pod's network drifted from what ADD set up; recreate the pod sandbox",
            )
        return True


def _lists_other_cards(conf: NetConf) -> bool:
    """Whether the prevResult names an interface of a card above 0 (`mNicIf<N>`): a cheap look first."""
    listed = (conf.prev_result or {}).get("interfaces")
    return isinstance(listed, list) and any(
        isinstance(i, dict) and str(i.get("name", "")).startswith(MULTI_NIC_IFNAME_PREFIX) for i in listed
    )


def _addresses(ips: Any) -> str:
    return ", ".join(str(ip) for ip in ips) or "none"


def _describe(specs: Sequence[PodInterface], allocations: Sequence[Allocation]) -> str:
    return "; ".join(
        f"{s.ifname} {s.ip} on {a.eni_id} (card {a.network_card}, table {s.route_table})"
        for s, a in zip(specs, allocations, strict=True)
    )
