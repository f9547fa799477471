"""The reconciler: upstream's nodeIPPoolReconcile, IMDS first, with EC2 as the only source of addresses.

The rule that keeps ipamd from handing out an address the node does not own (upstream #3887, where IMDS kept
listing an address for longer than the 60 s cooldown and ipamd re-added it):

    An address enters the datastore only when EC2 says the ENI has it: either ipamd's own EC2 call just
    assigned it (pool growth), or DescribeNetworkInterfaces lists it on the ENI. IMDS never supplies an
    address; a difference between IMDS and the datastore only makes the reconciler ask EC2.

Likewise an ENI is dropped only when both IMDS and EC2 no longer show it attached (upstream #1967: stale IMDS
made the CNI drop an ENI that pods were using). Addresses and ENIs ipamd itself gave back stay in the
reconcile cooldown for 60 s, so a lagging IMDS does not even trigger the EC2 call for them.

In IPv6 mode the same holds for the primary ENI's /80 prefixes (IMDS `ipv6-prefix`, EC2 `Ipv6Prefixes`); the
IPv4 addresses an ENI has there are not ipamd's to serve, and the reverse in IPv4 mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network

from vpccni.ipamd.pool.cooldown import ReconcileCooldown
from vpccni.ipamd.pool.eni_actions import store_eni
from vpccni.ipamd.pool.snapshot import EniSnapshot
from vpccni.ipamd.ports import (
    CloudError,
    CloudPort,
    EniDescription,
    MetadataPort,
    NodeNetworkPort,
    PoolStore,
    cidr_order,
    is_secondary_ip,
    split_cidrs,
)
from vpccni.networkutils.model import IPNetwork

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReconcileReport:
    added_enis: tuple[str, ...] = ()
    removed_enis: tuple[str, ...] = ()
    added_cidrs: tuple[IPNetwork, ...] = ()
    removed_cidrs: tuple[IPNetwork, ...] = ()
    pods_force_removed: int = 0
    ec2_checks: int = 0  # DescribeNetworkInterfaces calls made


@dataclass(kw_only=True)
class _Tally:
    added_enis: list[str] = field(default_factory=list)
    removed_enis: list[str] = field(default_factory=list)
    added: list[IPNetwork] = field(default_factory=list)
    removed: list[IPNetwork] = field(default_factory=list)
    pods: int = 0
    ec2_checks: int = 0

    def report(self) -> ReconcileReport:
        return ReconcileReport(
            added_enis=tuple(self.added_enis),
            removed_enis=tuple(self.removed_enis),
            added_cidrs=tuple(self.added),
            removed_cidrs=tuple(self.removed),
            pods_force_removed=self.pods,
            ec2_checks=self.ec2_checks,
        )


class Reconciler:
    """Brings one network card's datastore in line with what EC2 has attached to the node."""

    def __init__(
        self,
        *,
        store: PoolStore,
        cloud: CloudPort,
        metadata: MetadataPort,
        network: NodeNetworkPort,
        cooldown: ReconcileCooldown,
        primary_eni_id: str,
        network_card: int = 0,
        is_managed: Callable[[EniDescription], bool] = lambda eni: True,
        prepare_eni: Callable[[EniDescription], None] = lambda eni: None,
        unmanaged_eni_ids: Iterable[str] = (),
        ipv6: bool = False,
    ) -> None:
        self._store = store
        self._cloud = cloud
        self._metadata = metadata
        self._network = network
        self._cooldown = cooldown
        self._primary_eni_id = primary_eni_id
        self._card = network_card
        self._is_managed = is_managed
        self._prepare_eni = prepare_eni  # e.g. tag it (node init's tagging step)
        self._unmanaged = set(unmanaged_eni_ids)  # known and left alone: no EC2 call for them each time
        self._ipv6 = ipv6  # the family served: IPv6 /80s, else IPv4 secondary IPs and /28s
        self.last_report = ReconcileReport()

    def reconcile(self) -> None:
        self.last_report = self.run()

    def run(self) -> ReconcileReport:
        tally = _Tally()
        try:
            listed = self._metadata.attached_enis()
        except CloudError as err:
            # IMDS down or refusing: nothing to compare with, and nothing changes until it answers (the pool
            # keeps growing from EC2's answers meanwhile).
            log.warning("reconcile skipped: %s", err)
            return tally.report()
        imds = {e.eni_id: e for e in listed if e.network_card == self._card}
        known = {e.eni_id: e for e in self._store.snapshot().enis}

        new_ids = [
            i for i in imds if i not in known and i not in self._unmanaged and not self._cooldown.active(i)
        ]
        gone_ids = [i for i in known if i not in imds]
        mismatched = [
            i for i in known if i in imds and self._differs(known[i], imds[i].pool_cidrs(ipv6=self._ipv6))
        ]
        to_check = new_ids + gone_ids + mismatched
        if not to_check:
            return tally.report()
        try:
            truth = {d.eni_id: d for d in self._cloud.describe_enis(to_check)}
        except CloudError as err:
            log.warning("reconcile could not read ENIs from EC2 (%s); the datastore stays as it is", err)
            return tally.report()
        tally.ec2_checks += 1

        for eni_id in new_ids:
            if eni_id in truth:
                self._add_eni(truth[eni_id], tally)
            else:
                log.info("IMDS lists ENI %s but EC2 does not have it attached; ignoring it", eni_id)
        for eni_id in gone_ids:
            if eni_id in truth:
                # IMDS lags (or dropped it briefly): EC2 still has it attached, so keep it and its addresses.
                self._sync_cidrs(known[eni_id], truth[eni_id], tally)
            else:
                self._remove_eni(known[eni_id], tally)
        for eni_id in mismatched:
            if eni_id in truth:
                self._sync_cidrs(known[eni_id], truth[eni_id], tally)
        report = tally.report()
        if to_check:
            log.info("reconciled with EC2: %s", report)
        return report

    def resync_eni(self, eni_id: str) -> None:
        """Re-read one ENI from EC2 (after PrivateIpAddressLimitExceeded: the datastore missed addresses)."""
        known = {e.eni_id: e for e in self._store.snapshot().enis}
        if eni_id not in known:
            return
        tally = _Tally()
        for described in self._cloud.describe_enis([eni_id]):
            self._sync_cidrs(known[eni_id], described, tally)

    def _differs(self, eni: EniSnapshot, imds_cidrs: frozenset[IPNetwork]) -> bool:
        ours = {c.cidr for c in eni.cidrs}
        # Addresses ipamd just gave back are expected to linger in IMDS: no reason to ask EC2.
        lingering = {c for c in imds_cidrs - ours if self._cooldown.active(c)}
        return ours != set(imds_cidrs) - lingering

    def _add_eni(self, eni: EniDescription, tally: _Tally) -> None:
        if not self._is_managed(eni):
            self._unmanaged.add(eni.eni_id)
            log.info(
                "ENI %s is not managed by ipamd (no_manage tag or untagged); leaving it alone", eni.eni_id
            )
            return
        is_primary = eni.eni_id == self._primary_eni_id
        try:
            self._prepare_eni(eni)
            if not is_primary:
                self._network.setup_eni(eni)
        except Exception:
            log.exception("setting up ENI %s failed; the next reconcile retries", eni.eni_id)
            return
        fresh = self._without_cooldown(eni.pool_cidrs(ipv6=self._ipv6))
        store_eni(self._store, _with_cidrs(eni, fresh), is_primary=is_primary, ipv6=self._ipv6)
        tally.added_enis.append(eni.eni_id)
        tally.added.extend(sorted(fresh, key=cidr_order))
        log.info("added ENI %s (device %d) found attached to the node", eni.eni_id, eni.device_number)

    def _remove_eni(self, eni: EniSnapshot, tally: _Tally) -> None:
        pods = eni.assigned_ips
        self._store.remove_eni(eni.eni_id, force=True)
        self._network.teardown_eni(
            eni_id=eni.eni_id, device_number=eni.device_number, primary_ip=eni.primary_ip
        )
        tally.removed_enis.append(eni.eni_id)
        tally.pods += pods
        log.warning(
            "ENI %s is no longer attached (IMDS and EC2 agree); removed it and %d pod addresses",
            eni.eni_id,
            pods,
        )

    def _sync_cidrs(self, eni: EniSnapshot, truth: EniDescription, tally: _Tally) -> None:
        ours = {c.cidr for c in eni.cidrs}
        theirs = truth.pool_cidrs(ipv6=self._ipv6)
        missing = self._without_cooldown(theirs - ours)
        extra = sorted(ours - theirs, key=cidr_order)
        ips = sorted((c for c in missing if is_secondary_ip(c)), key=cidr_order)
        prefixes = sorted((c for c in missing if not is_secondary_ip(c)), key=cidr_order)
        if ips:
            self._store.add_cidrs(eni.eni_id, ips, is_prefix=False)
        if prefixes:
            self._store.add_cidrs(eni.eni_id, prefixes, is_prefix=True)
        tally.added.extend(ips + prefixes)
        if extra:
            pods = self._store.force_remove_cidrs(eni.eni_id, extra)
            tally.removed.extend(extra)
            tally.pods += pods
            log.warning(
                "EC2 no longer has %d CIDRs of ENI %s; removed them (%d pods held addresses there)",
                len(extra),
                eni.eni_id,
                pods,
            )

    def _without_cooldown(self, cidrs: Iterable[IPNetwork]) -> frozenset[IPNetwork]:
        return frozenset(c for c in cidrs if not self._cooldown.active(c))


def _with_cidrs(eni: EniDescription, cidrs: frozenset[IPNetwork]) -> EniDescription:
    """The ENI with only `cidrs` of its pool family (ones in reconcile cooldown left out)."""
    ips, prefixes = split_cidrs(cidrs)
    return replace(
        eni,
        secondary_ips=frozenset(ips),
        prefixes=frozenset(p for p in prefixes if isinstance(p, IPv4Network)),
        ipv6_prefixes=frozenset(p for p in prefixes if isinstance(p, IPv6Network)),
    )
