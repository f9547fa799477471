"""What the pool manager's decisions do to EC2, the host network and the datastore, one decision at a time.

The manager decides what and when (targets, pacing, back-off, status); `EniActions` carries a decision out:
assign addresses to an ENI, attach and set up a new ENI, give unused addresses back, free an ENI. Node init
and the reconciler put the ENIs EC2 reports into the datastore with `store_eni`.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Network
from typing import Protocol

from vpccni.ipamd.pool.cooldown import ReconcileCooldown
from vpccni.ipamd.pool.decisions import AllocateEni, AssignToEni, FreeEni, ReleaseCidrs
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.ports import (
    IP_LIMIT_EXCEEDED_CODE,
    CloudError,
    CloudPort,
    EniDescription,
    EniRecord,
    EniRequest,
    NodeNetworkPort,
    PoolStore,
    cidr_order,
    is_secondary_ip,
    split_cidrs,
)
from vpccni.networkutils.model import IPNetwork

log = logging.getLogger(__name__)


class EniSetupError(Exception):
    def __init__(self, eni_id: str) -> None:
        super().__init__(f"host network setup of ENI {eni_id} failed")
        self.eni_id = eni_id


class PoolReconciler(Protocol):
    def reconcile(self) -> None: ...

    def resync_eni(self, eni_id: str) -> None: ...


def addresses_to_cidrs(
    eni: EniDescription, *, ipv6: bool = False
) -> tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]]:
    """(secondary /32s, prefixes) of an ENI in the mode's family, sorted: /28s, or the /80s in IPv6 mode."""
    cidrs = eni.pool_cidrs(ipv6=ipv6)
    ips = sorted((c for c in cidrs if is_secondary_ip(c)), key=cidr_order)
    return tuple(ips), tuple(sorted((c for c in cidrs if not is_secondary_ip(c)), key=cidr_order))


def store_eni(store: PoolStore, eni: EniDescription, *, is_primary: bool, ipv6: bool = False) -> None:
    """Put an ENI EC2 reported, with the addresses EC2 says it has (of the mode's family), into the
    datastore."""
    store.add_eni(
        EniRecord(
            eni_id=eni.eni_id,
            device_number=eni.device_number,
            primary_ip=eni.primary_ip,
            is_primary=is_primary,
            is_trunk=eni.is_trunk,
            is_efa=eni.is_efa,
            subnet_id=eni.subnet_id,
        )
    )
    ips, prefixes = addresses_to_cidrs(eni, ipv6=ipv6)
    if ips:
        store.add_cidrs(eni.eni_id, ips, is_prefix=False)
    if prefixes:
        store.add_cidrs(eni.eni_id, prefixes, is_prefix=True)


class EniActions:
    """Carries out one network card's growth and release decisions."""

    def __init__(
        self,
        *,
        network_card: int,
        store: PoolStore,
        cloud: CloudPort,
        network: NodeNetworkPort,
        cooldown: ReconcileCooldown,
        reconciler: PoolReconciler | None,
        subnet_id: str | None,
        security_group_ids: tuple[str, ...],
    ) -> None:
        self._network_card = network_card
        self._store = store
        self._cloud = cloud
        self._network = network
        self._cooldown = cooldown
        self._reconciler = reconciler
        self._subnet_id = subnet_id
        self._security_group_ids = security_group_ids

    def assign(self, decision: AssignToEni) -> None:
        """Assign addresses to an existing ENI; a batch EC2 refused for another reason than a full subnet or
        throttling is retried as one."""
        try:
            self._assign_count(decision, decision.count)
        except CloudError as err:
            if err.code == IP_LIMIT_EXCEEDED_CODE and self._reconciler is not None:
                # The datastore missed addresses EC2 already has: read them back instead.
                self._reconciler.resync_eni(decision.eni_id)
                return
            if decision.count == 1 or err.is_insufficient_cidr or err.is_throttle:
                raise
            log.warning(
                "assigning %d to %s failed (%s); retrying with 1", decision.count, decision.eni_id, err
            )
            self._assign_count(decision, 1)

    def _assign_count(self, decision: AssignToEni, count: int) -> None:
        if decision.prefixes:
            prefixes = self._cloud.assign_prefixes(decision.eni_id, count)
            self._store.add_cidrs(decision.eni_id, prefixes, is_prefix=True)
            log.info("added %d prefixes to %s", len(prefixes), decision.eni_id)
        else:
            ips = self._cloud.assign_ips(decision.eni_id, count)
            self._store.add_cidrs(decision.eni_id, [IPv4Network(ip) for ip in ips], is_prefix=False)
            log.info("added %d secondary IPs to %s", len(ips), decision.eni_id)

    def allocate_eni(self, decision: AllocateEni) -> EniDescription:
        """Create and attach an ENI, set up its host network and put it into the datastore.

        Raises CloudError from EC2, or EniSetupError when the host network setup failed."""
        request = EniRequest(
            ips=0 if decision.prefixes else decision.size,
            prefixes=decision.size if decision.prefixes else 0,
            network_card=self._network_card,
            subnet_id=self._subnet_id,
            security_group_ids=self._security_group_ids,
            avoid_subnets=decision.avoid_subnets,
        )
        eni = self._cloud.allocate_eni(request)
        try:
            self._network.setup_eni(eni)
        except Exception as err:
            # The ENI stays attached; the reconciler finds it in IMDS and retries its setup.
            log.exception(
                "setting up the host network for new ENI %s failed; the reconciler retries", eni.eni_id
            )
            raise EniSetupError(eni.eni_id) from err
        store_eni(self._store, eni, is_primary=False)
        log.info(
            "attached ENI %s (device %d) with %d addresses", eni.eni_id, eni.device_number, len(eni.cidrs)
        )
        return eni

    def release_cidrs(self, decision: ReleaseCidrs) -> bool:
        """Take unused addresses out of the datastore and give them back to EC2; true if EC2 took any."""
        released = False
        for release in decision.releases:
            removed = self._store.remove_cidrs(release.eni_id, release.cidrs)
            if not removed:
                continue
            # Before EC2 hears of it: IMDS will list these for a while and the reconciler must not re-add
            # them.
            self._cooldown.add(removed)
            ips, prefixes = split_cidrs(removed)
            try:
                self._cloud.unassign(release.eni_id, ips=ips, prefixes=prefixes)
            except CloudError as err:
                log.warning("giving %d CIDRs of %s back to EC2 failed: %s", len(removed), release.eni_id, err)
                continue
            released = True
            log.info("gave %d unused CIDRs of %s back to EC2", len(removed), release.eni_id)
        return released

    def free_eni(self, decision: FreeEni, snap: PoolSnapshot) -> bool:
        """Take an ENI with no pods out of the datastore, free it in EC2 and tear down its host network;
        true if it was freed."""
        eni = next(e for e in snap.enis if e.eni_id == decision.eni_id)
        if not self._store.remove_eni(eni.eni_id):
            return False  # a pod took an address on it since the snapshot
        self._cooldown.add([eni.eni_id, *(c.cidr for c in eni.cidrs)])
        try:
            self._cloud.free_eni(eni.eni_id)
        except CloudError as err:
            log.warning(
                "freeing ENI %s failed (%s); the reconciler re-adds it if it stays attached", eni.eni_id, err
            )
            return False
        self._network.teardown_eni(
            eni_id=eni.eni_id, device_number=eni.device_number, primary_ip=eni.primary_ip
        )
        log.info("freed ENI %s", eni.eni_id)
        return True
