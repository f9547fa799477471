"""This instance's attached ENIs: IMDS lists them cheaply, EC2 is the authority (``DescribeAllENIs``).

IMDS can lag EC2 by seconds to minutes (upstream #1177, #1967, #3887), so wherever the two disagree the EC2
view wins, and ENIs EC2 no longer knows are dropped instead of being managed (or freed) from stale data.
"""

from __future__ import annotations

import dataclasses
import logging
import random

from vpccni.awsutils.backoff import IMDS_ATTACH_WAIT_BACKOFF, Backoff, retry
from vpccni.awsutils.clock import Clock
from vpccni.awsutils.eni import EniManager
from vpccni.awsutils.errors import ImdsNotFoundError, ImdsStaleError, ImdsUnavailableError
from vpccni.awsutils.imds import InstanceMetadata
from vpccni.awsutils.models import AttachedEni, Ec2Eni, EniMetadata

log = logging.getLogger(__name__)


def merge_eni(imds: EniMetadata, ec2: Ec2Eni, *, is_primary: bool) -> EniMetadata:
    """IMDS's record corrected by EC2's addresses, prefixes, subnet and attachment."""
    merged = dataclasses.replace(
        imds,
        subnet_id=ec2.subnet_id or imds.subnet_id,
        vpc_id=ec2.vpc_id or imds.vpc_id,
        network_card=ec2.network_card,
        device_number=0
        if is_primary
        else (ec2.device_index if ec2.device_index is not None else imds.device_number),
        ipv4_addresses=ec2.ipv4_addresses,
        ipv4_prefixes=ec2.ipv4_prefixes,
        ipv6_addresses=ec2.ipv6_addresses,
        ipv6_prefixes=ec2.ipv6_prefixes,
    )
    if merged != imds:
        log.info("IMDS is stale for ENI %s; using EC2's view", imds.eni_id)
    return merged


def describe_attached_enis(metadata: InstanceMetadata, enis: EniManager) -> list[AttachedEni]:
    """IMDS's ENIs merged with one DescribeNetworkInterfaces (EC2 wins; ids EC2 lacks are dropped)."""
    primary_mac = metadata.primary_mac()
    listed = metadata.attached_enis()
    ec2_view = enis.describe_enis([e.eni_id for e in listed])
    out: list[AttachedEni] = []
    for item in listed:
        ec2 = ec2_view.get(item.eni_id)
        if ec2 is None:
            log.warning("ENI %s is in IMDS but not in EC2; skipping it", item.eni_id)
            continue
        is_primary = item.mac == primary_mac
        out.append(
            AttachedEni(
                metadata=merge_eni(item, ec2, is_primary=is_primary),
                interface_type=ec2.interface_type,
                tags=dict(ec2.tags),
                is_primary=is_primary,
            )
        )
    return out


def wait_for_eni_in_imds(
    metadata: InstanceMetadata,
    *,
    eni_id: str,
    mac: str,
    clock: Clock,
    need_addresses: bool = True,
    policy: Backoff = IMDS_ATTACH_WAIT_BACKOFF,
    rng: random.Random | None = None,
) -> EniMetadata:
    """Poll IMDS until a new ENI shows up (with a secondary IPv4 or prefix when ``need_addresses``).

    Upstream's ``WaitForENIAndIPsAttached``: 12 tries from 100 ms. Partial address sets are accepted; ipamd
    picks up the rest on its next reconcile.
    """

    def probe() -> EniMetadata:
        try:
            found = metadata.eni(mac)
        except ImdsNotFoundError:
            raise ImdsStaleError(f"IMDS does not list ENI {eni_id} ({mac}) yet") from None
        if found.eni_id != eni_id:
            raise ImdsStaleError(f"IMDS still shows {found.eni_id} at MAC {mac}, not {eni_id}")
        if (
            need_addresses
            and not found.secondary_ipv4s
            and not found.ipv4_prefixes
            and not found.ipv6_prefixes
        ):
            raise ImdsStaleError(f"IMDS lists ENI {eni_id} but none of its addresses yet")
        return found

    def transient(exc: Exception) -> bool:
        return isinstance(exc, ImdsStaleError | ImdsUnavailableError)

    return retry(
        probe, policy=policy, clock=clock, retry_on=transient, what=f"wait for {eni_id} in IMDS", rng=rng
    )
