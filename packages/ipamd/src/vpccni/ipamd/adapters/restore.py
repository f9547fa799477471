"""Node init's `AllocationRestorePort` on a real host: the checkpoint, the host's links and its ip rules."""

from __future__ import annotations

import logging

from vpccni.ipamd.checkpoint.file import Checkpointer
from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.restore import RestoreReport, host_veth_checker, restore
from vpccni.networkutils.netlink import Netlink

log = logging.getLogger(__name__)


class HostCheckpointRestore:
    """Re-marks the checkpoint's pods assigned; pods whose host veth is gone lose their leftover rules.

    The host's links are read when restoring (not when constructed), after ENI setup.
    """

    def __init__(self, *, datastore: DataStore, checkpointer: Checkpointer, netlink: Netlink) -> None:
        self._datastore = datastore
        self._checkpointer = checkpointer
        self._netlink = netlink
        self.last_report: RestoreReport | None = None

    def restore_allocations(self) -> int:
        rules = NetlinkHostPodRules(self._netlink)
        report = restore(
            self._datastore,
            self._checkpointer,
            host_veth_exists=host_veth_checker(link.name for link in self._netlink.links()),
            release_rules=lambda ip: log.info(
                "%s: %d leftover rules removed", ip, rules.remove_pod_rules(ip)
            ),
        )
        self.last_report = report
        log.info(
            "checkpoint: %d pods restored, %d gone (veth missing), %d stale",
            len(report.restored),
            len(report.veth_gone),
            len(report.stale),
        )
        return len(report.restored)
