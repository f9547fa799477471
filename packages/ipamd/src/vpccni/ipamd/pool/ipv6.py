"""IPv6 mode's pool: no warm targets, only the primary ENI's /80 prefix, which each pool iteration makes sure
is there (assigning one when EC2 shows none, e.g. after someone removed it; node init's pre-scale does it
first)."""

from __future__ import annotations

import logging

from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.ipamd.ports import CloudError, CloudPort, PoolStore

log = logging.getLogger(__name__)


def ensure_ipv6_prefix(
    store: PoolStore, cloud: CloudPort, *, provisioning_enabled: bool
) -> tuple[PoolStatus, bool]:
    """Make sure the primary ENI in `store` has an IPv6 prefix: the pool's status, and whether EC2 was asked
    for one just now (the reconciler then waits for IMDS to catch up)."""
    primary = next((e for e in store.snapshot().enis if e.is_primary), None)
    if primary is None:
        return PoolStatus(
            state=GrowthState.CLOUD_ERROR, detail="the primary ENI is not in the datastore"
        ), False
    if any(c.cidr.version == 6 for c in primary.cidrs):
        return PoolStatus(state=GrowthState.OK), False
    if not provisioning_enabled:
        return PoolStatus(state=GrowthState.PROVISIONING_DISABLED), False
    try:
        prefixes = cloud.assign_ipv6_prefix(primary.eni_id)
    except CloudError as err:
        log.warning("assigning an IPv6 prefix to ENI %s failed: %s (%s)", primary.eni_id, err, err.code)
        if err.is_throttle:
            return PoolStatus(state=GrowthState.THROTTLED, detail=str(err)), False
        return PoolStatus(state=GrowthState.CLOUD_ERROR, detail=f"{err.code}: {err}"), False
    store.add_cidrs(primary.eni_id, list(prefixes), is_prefix=True)
    log.info("assigned IPv6 prefix %s to primary ENI %s", ", ".join(map(str, prefixes)), primary.eni_id)
    return PoolStatus(state=GrowthState.OK), True
