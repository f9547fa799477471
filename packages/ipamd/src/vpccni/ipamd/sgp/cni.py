"""What the CNI service asks first when ENABLE_POD_ENI is on: ADD, DEL, CHECK and GC of branch-ENI pods.

ADD: the pod's branch ENI from its annotation (`lookup`, waiting a bounded time), the trunk's link
(`trunk`), the VLAN wiring (`vpccni.networkutils.vlan`) in the conflist's `podSGEnforcingMode`, the
attachment recorded (`attachments`), and upstream's result (VLAN id in the dummy interface).
DEL: from the recorded attachment, else from `prevResult` alone (a pod ipamd never recorded: wired by the
upstream plugin, or the record lost), so it needs neither the API server nor the annotation. A VLAN id the
controller has meanwhile given another live pod on this node is left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import NetConf
from vpccni.ipamd.cni.ports import PodRef
from vpccni.ipamd.cni.result import PreviousAttachment, build_result, prev_result_for_del
from vpccni.ipamd.datastore.model import CheckpointWriteFailed
from vpccni.ipamd.podkey import PodMetadata
from vpccni.ipamd.sgp.annotation import BranchEni
from vpccni.ipamd.sgp.attachments import BranchAttachment, BranchAttachments
from vpccni.ipamd.sgp.lookup import BranchLookupError, BranchPodLookup
from vpccni.networkutils.model import IPAddress
from vpccni.networkutils.names import STRICT_BRANCH_VETH_PREFIX
from vpccni.networkutils.pod import PodInterface
from vpccni.networkutils.tables import route_table_for_vlan
from vpccni.networkutils.vlan import BranchPodInterface, BranchPodWiring, EnforcingMode

log = logging.getLogger(__name__)

# Upstream's AddNetwork answers a branch-ENI pod with device number -1, which the plugin also records as
# the route table (its result's container interface).
BRANCH_DEVICE_NUMBER = -1
TRUNK_POLL_S = 0.05


def host_veth_prefix(conf: NetConf) -> str:
    """Strict mode names the host veth `vlan<hash>`, so no `eni+` SNAT or connmark rule (or Calico) takes
    it; standard mode keeps the configured prefix (upstream's BuildHostVethNamePrefix)."""
    strict = conf.pod_sg_enforcing_mode == EnforcingMode.STRICT.value
    return STRICT_BRANCH_VETH_PREFIX if strict else conf.veth_prefix


class BranchCni:
    """`vpccni.ipamd.cni.ports.BranchPods` over the real pieces; thread-safe (the service serialises each
    attachment, different pods run concurrently)."""

    def __init__(
        self,
        *,
        lookup: BranchPodLookup,
        attachments: BranchAttachments,
        wiring: BranchPodWiring,
        trunk_link: Callable[[], str | None],
        max_wait_s: float = 10.0,
        on_error: Callable[[str], None] = lambda fn: None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lookup = lookup
        self._max_wait_s = max_wait_s  # VPCCNI_POD_ENI_WAIT
        self._attachments = attachments
        self._wiring = wiring
        self._trunk_link = trunk_link
        self._on_error = on_error  # awscni_pod_eni_error_count{fn}
        self._monotonic = monotonic
        self._sleep = sleep

    # --- ADD -------------------------------------------------------------------------------------------
    def add(
        self, pod: PodRef, conf: NetConf, netns_fd: int, netns_path: str, *, wait_s: float
    ) -> dict[str, Any] | None:
        wait_s = min(wait_s, self._max_wait_s)
        deadline = self._monotonic() + wait_s
        try:
            branch = self._lookup.branch_eni(pod.namespace, pod.name, wait_s=wait_s)
        except BranchLookupError as exc:
            self._on_error("AddNetwork")
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER if exc.retryable else ErrorCode.INTERNAL, str(exc)
            ) from None
        if branch is None:
            return None
        existing = self._attachments.get(pod.key)
        if existing is not None:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"{pod.label} already has interface {pod.ifname} with {existing.branch.ip} (branch ENI "
                f"{existing.branch.eni_id}): the runtime must DEL it before adding it again",
            )
        trunk = self._wait_for_trunk(deadline)
        if trunk is None:
            self._on_error("AddNetwork")
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER,
                f"{pod.label} has branch ENI {branch.eni_id} but no trunk ENI is attached to this node "
                "yet: the VPC resource controller attaches one after ipamd records SecurityGroupsForPods in "
                "the node's CNINode (needs a free ENI slot); see `vpccni doctor`",
            )
        spec = _spec(pod, conf, branch, trunk)
        try:
            wired = self._wiring.wire(netns_fd, spec)
        except Exception as exc:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"failed to set up the network of {pod.label} on branch ENI {branch.eni_id} (VLAN "
                f"{branch.vlan_id}, trunk link {trunk}): {exc}",
            ) from None
        metadata = PodMetadata(namespace=pod.namespace, name=pod.name, host_veth=spec.pod.host_veth)
        try:
            self._attachments.add(key=pod.key, metadata=metadata, branch=branch)
        except CheckpointWriteFailed as exc:
            self._wiring.unwire(spec.pod, branch.vlan_id, netns_fd)
            raise CNIError(ErrorCode.INTERNAL, str(exc)) from None
        log.info(
            "ADD %s: %s on branch ENI %s, VLAN %d (%s mode)",
            pod.label, branch.ip, branch.eni_id, branch.vlan_id, spec.mode.value,
        )  # fmt: skip
        return build_result(
            host_veth=wired.host_veth,
            host_mac=wired.host_mac,
            ifname=pod.ifname,
            netns_path=netns_path,
            ip=branch.ip,
            route_table=BRANCH_DEVICE_NUMBER,
            device_number=BRANCH_DEVICE_NUMBER,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            vlan_id=branch.vlan_id,
            gateway=branch.gateway,
        )

    def _wait_for_trunk(self, deadline: float) -> str | None:
        """The trunk's link, waiting what is left of the ADD's budget: the controller associates a branch
        with an attached trunk before it annotates the pod, but ipamd may set the trunk up a moment later."""
        while (trunk := self._trunk_link()) is None and self._monotonic() < deadline:
            self._sleep(TRUNK_POLL_S)
        return trunk

    # --- DEL -------------------------------------------------------------------------------------------
    def delete(
        self, pod: PodRef, conf: NetConf, version: str, netns_fd: int | None, *, keep_veth: bool
    ) -> bool:
        known = self._attachments.get(pod.key)
        if known is not None:
            self._teardown(pod, known.branch.ip, known.branch.vlan_id, known.host_veth, netns_fd, keep_veth)
            self._attachments.remove(pod.key)
            log.info(
                "DEL %s: branch ENI %s (VLAN %d) unwired",
                pod.label,
                known.branch.eni_id,
                known.branch.vlan_id,
            )
            return True
        prev = _branch_prev_result(pod, conf, version)
        if prev is None:
            return False
        host_veth = prev.host_veth or pod.upstream_veth(host_veth_prefix(conf))
        self._teardown(pod, prev.ip, prev.vlan_id, host_veth, netns_fd, keep_veth)
        log.info("DEL %s: VLAN %d pod unwired from its prevResult", pod.label, prev.vlan_id)
        return True

    def _teardown(
        self,
        pod: PodRef,
        ip: IPAddress,
        vlan_id: int,
        host_veth: str,
        netns_fd: int | None,
        keep_veth: bool,
    ) -> None:
        if self._attachments.vlan_holder(vlan_id, but=pod.key) is not None:
            # The controller reused the VLAN for a newer pod on this node: its link and rules are that pod's.
            log.info("DEL %s: VLAN %d now belongs to another pod; leaving its link", pod.label, vlan_id)
            return
        bare = PodInterface(host_veth=host_veth, ip=ip, ifname=pod.ifname)
        try:
            self._wiring.unwire(bare, vlan_id, netns_fd, keep_veth=keep_veth)
        except Exception as exc:
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER,
                f"could not remove the network of {pod.label} (VLAN {vlan_id}): {exc}",
            ) from None

    # --- CHECK and GC ------------------------------------------------------------------------------------
    def check(self, pod: PodRef, conf: NetConf, netns_fd: int) -> list[str] | None:
        known = self._attachments.get(pod.key)
        if known is None:
            return None
        trunk = self._trunk_link()
        if trunk is None:
            return [f"no trunk ENI link for branch ENI {known.branch.eni_id}"]
        spec = _spec(pod, conf, known.branch, trunk, host_veth=known.host_veth)
        return self._wiring.verify(netns_fd, spec)

    def collect(self, network: str, keep: set[tuple[str, str]]) -> list[str]:
        errors = []
        for attachment in self._attachments.all():
            key = attachment.key
            if key.network_name != network or (key.container_id, key.ifname) in keep:
                continue
            pod = _pod_of(attachment)
            try:
                b = attachment.branch
                self._teardown(pod, b.ip, b.vlan_id, attachment.host_veth, None, keep_veth=False)
                self._attachments.remove(key)
                log.info("GC released %s (branch ENI %s)", pod.label, b.eni_id)
            except (CNIError, CheckpointWriteFailed) as exc:
                errors.append(f"{pod.label}: {exc}")
        return errors

    def addresses(self) -> set[IPAddress]:
        return {a.branch.ip for a in self._attachments.all()}


def _spec(
    pod: PodRef, conf: NetConf, branch: BranchEni, trunk: str, *, host_veth: str = ""
) -> BranchPodInterface:
    return BranchPodInterface(
        pod=PodInterface(
            host_veth=host_veth or pod.upstream_veth(host_veth_prefix(conf)),
            ip=branch.ip,
            ifname=pod.ifname,
            route_table=route_table_for_vlan(branch.vlan_id),
            mtu=conf.mtu,
        ),
        vlan_id=branch.vlan_id,
        branch_mac=branch.mac,
        gateway=branch.gateway,
        trunk_link=trunk,
        mode=EnforcingMode(conf.pod_sg_enforcing_mode),
    )


def _branch_prev_result(pod: PodRef, conf: NetConf, version: str) -> PreviousAttachment | None:
    """The prevResult's attachment when it says VLAN (a branch-ENI pod's), else None."""
    prev = prev_result_for_del(conf.prev_result, version, pod.ifname, pod.label)
    return prev if prev is not None and prev.vlan_id else None


def _pod_of(attachment: BranchAttachment) -> PodRef:
    key, meta = attachment.key, attachment.metadata
    return PodRef(
        network=key.network_name, container_id=key.container_id, ifname=key.ifname,
        namespace=meta.namespace, name=meta.name,
    )  # fmt: skip
