"""Security groups for pods on one node: the pieces built from the plan and ipamd's own, in one place, so
the daemon adds a few lines (`SgpNode.build`, `restore`, `start`, `stop`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from vpccni.awsutils.clock import Clock
from vpccni.ipamd.checkpoint.file import Checkpointer
from vpccni.ipamd.sgp.attachments import BranchAttachments
from vpccni.ipamd.sgp.cni import BranchCni
from vpccni.ipamd.sgp.config import SgpConfig
from vpccni.ipamd.sgp.lookup import BranchPodLookup
from vpccni.ipamd.sgp.restore import BranchRestoreReport, restore_branch_pods
from vpccni.ipamd.sgp.rpc_branch import BranchRpcLookup
from vpccni.ipamd.sgp.trunk import TrunkRequest, TrunkTracker
from vpccni.k8sapi import KubeApi, PodCache
from vpccni.networkutils.netlink import Netlink
from vpccni.networkutils.pod import PodWiring
from vpccni.networkutils.vlan import BranchPodWiring

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SgpNode:
    config: SgpConfig
    tracker: TrunkTracker
    attachments: BranchAttachments
    cni: BranchCni
    rpc: BranchRpcLookup  # the gRPC replies' branch fields, for upstream plugins
    wiring: BranchPodWiring
    netlink: Netlink
    api: Callable[[], KubeApi | None]  # None while the API server is not connected
    on_error: Callable[[str], None]  # awscni_pod_eni_error_count{fn}

    @classmethod
    def build(
        cls,
        *,
        config: SgpConfig,
        tracker: TrunkTracker,
        checkpointer: Checkpointer,
        netlink: Netlink,
        pods: PodWiring,
        api: Callable[[], KubeApi | None],
        on_error: Callable[[str], None],
        on_count: Callable[[int], None] = lambda count: None,
    ) -> SgpNode:
        attachments = BranchAttachments(checkpointer=checkpointer, on_change=on_count)
        wiring = BranchPodWiring(host=netlink, pods=pods)
        lookup = BranchPodLookup(pods=lambda: _pods(api), ipv6=config.ipv6)
        cni = BranchCni(
            lookup=lookup,
            attachments=attachments,
            wiring=wiring,
            trunk_link=tracker.link_name,
            max_wait_s=config.annotation_wait_s,
            on_error=on_error,
        )
        return cls(
            config=config, tracker=tracker, attachments=attachments, cni=cni, wiring=wiring,
            rpc=BranchRpcLookup(lookup=lookup, trunk_link=tracker.link_name, netlink=netlink),
            netlink=netlink, api=api, on_error=on_error,
        )  # fmt: skip

    def restore(self) -> BranchRestoreReport:
        report = restore_branch_pods(attachments=self.attachments, netlink=self.netlink, wiring=self.wiring)
        log.info(
            "branch-ENI pods: %d restored, %d gone, %d unused VLAN links removed",
            len(report.restored), len(report.gone), len(report.orphan_vlans),
        )  # fmt: skip
        return report

    def ask_for_trunk(
        self, *, eni_count: Callable[[], int], max_enis: int, clock: Clock, interval_s: float
    ) -> TrunkRequest:
        """Started: stop it at shutdown."""
        request = TrunkRequest(
            tracker=self.tracker,
            api=self.api,
            eni_count=eni_count,
            max_enis=max_enis,
            on_error=self.on_error,
            clock=clock,
            interval_s=interval_s,
        )
        request.start()
        return request


def _pods(api: Callable[[], KubeApi | None]) -> PodCache | None:
    connected = api()
    return connected.pods if connected is not None else None
