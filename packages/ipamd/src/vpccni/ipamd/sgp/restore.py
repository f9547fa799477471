"""Branch-ENI pods at ipamd's start: keep the recorded pods whose veth is still there, tear down the rest,
and remove VLAN links no live pod routes through (a pod deleted, or an ADD cut short, while ipamd was down).

Like upstream's restore of ordinary pods, "still there" is the pod's host veth. A VLAN link ipamd has no
record of is kept while any pod is routed through it, so branch pods an upstream plugin wired before an
upgrade keep their network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vpccni.ipamd.sgp.attachments import BranchAttachment, BranchAttachments
from vpccni.networkutils.model import MAIN_TABLE
from vpccni.networkutils.names import vlan_id_of_link, vlan_link_name
from vpccni.networkutils.netlink import Netlink
from vpccni.networkutils.pod import PodInterface
from vpccni.networkutils.tables import FROM_POD_RULE_PRIORITY, VLAN_RULE_PRIORITY, route_table_for_vlan
from vpccni.networkutils.vlan import BranchPodWiring

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BranchRestoreReport:
    restored: tuple[BranchAttachment, ...]
    gone: tuple[BranchAttachment, ...]  # torn down: their veth went while ipamd was down
    orphan_vlans: tuple[int, ...]  # VLAN links no pod used, removed


def restore_branch_pods(
    *, attachments: BranchAttachments, netlink: Netlink, wiring: BranchPodWiring
) -> BranchRestoreReport:
    recorded = attachments.load()
    names = {link.name for link in netlink.links()}
    live = tuple(a for a in recorded if a.host_veth in names)
    gone = tuple(a for a in recorded if a.host_veth not in names)
    live_vlans = {a.branch.vlan_id for a in live}
    for attachment in gone:
        b = attachment.branch
        log.info(
            "branch-ENI pod %s/%s (%s, VLAN %d) went while ipamd was down: removing its network",
            attachment.metadata.namespace, attachment.metadata.name, b.ip, b.vlan_id,
        )  # fmt: skip
        if b.vlan_id not in live_vlans:
            wiring.unwire(PodInterface(host_veth=attachment.host_veth, ip=b.ip), b.vlan_id)
    attachments.keep(live)
    orphans = []
    names = {link.name for link in netlink.links()}  # after the teardowns above
    for name in sorted(names):
        vlan = vlan_id_of_link(name)
        if vlan is None or vlan in live_vlans or _routes_a_pod(netlink, vlan, names):
            continue
        log.info("removing VLAN link %s: no pod is routed through it", name)
        netlink.delete_link(vlan_link_name(vlan))
        for family in (4, 6):  # an IPv6 node's branch pods have IPv6 rules
            netlink.delete_rules(priority=VLAN_RULE_PRIORITY, table=route_table_for_vlan(vlan), family=family)
        orphans.append(vlan)
    return BranchRestoreReport(restored=live, gone=gone, orphan_vlans=tuple(orphans))


def _routes_a_pod(netlink: Netlink, vlan: int, links: set[str]) -> bool:
    """Whether a live pod's traffic goes through the VLAN: its table routes a pod to a veth that exists
    (strict mode), or a from-pod rule points at the table for a pod whose veth exists (standard mode)."""
    table = route_table_for_vlan(vlan)
    own = vlan_link_name(vlan)
    if any(r.ifname in links and r.ifname != own for r in netlink.routes(table)):
        return True
    sources = {r.src for r in netlink.rules() if r.priority == FROM_POD_RULE_PRIORITY and r.table == table}
    return any(r.dst in sources and r.ifname in links for r in netlink.routes(MAIN_TABLE))
