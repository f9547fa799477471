"""`CloudView` over the testbed's `Cloud`: its events, and the ENI, subnet and attachment look-ups the
datapath needs, all read from the EC2 state directly.

Never through the EC2 API: the datapath follows every ENI change from an event callback, and an API call there
would spend the product's throttle budget and show up in `cloud.call_log`, which reports the EC2 calls the
product made. Safe to call from an event callback: `Cloud` publishes after releasing its state lock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from vpccni.testbed.ec2.security import SecurityState
from vpccni.testbed.events import BranchAssociated, EniAttached

from .datapath import CloudView


class Ec2CloudView:
    """The datapath's view of a running `vpccni.testbed.cloud.Cloud`'s EC2 state (no API calls)."""

    def __init__(self, cloud: CloudView) -> None:
        # `Cloud` satisfies `CloudView` with direct state reads only; this view keeps it that way by
        # exposing nothing else (no `ec2_client`) to the datapath.
        self._cloud = cloud

    def subscribe(self, callback: Callable[[object], None]) -> None:
        self._cloud.subscribe(callback)

    def eni_addresses(
        self, eni_id: str
    ) -> tuple[ipaddress.IPv4Address, list[ipaddress.IPv4Address], list[ipaddress.IPv4Network], str]:
        """(primary IP, secondary IPs, /28 prefixes, subnet id) of the ENI now."""
        return self._cloud.eni_addresses(eni_id)

    def subnet_cidr(self, subnet_id: str) -> ipaddress.IPv4Network:
        return self._cloud.subnet_cidr(subnet_id)

    def eni_ipv6(self, eni_id: str) -> tuple[list[ipaddress.IPv6Address], list[ipaddress.IPv6Network]]:
        """(IPv6 addresses, /80 prefixes) of the ENI now (both empty in an IPv4-only subnet)."""
        return self._cloud.eni_ipv6(eni_id)

    def instance_enis(self, instance_id: str) -> list[EniAttached]:
        """The ENIs attached to the instance now, by (network card, device index)."""
        return self._cloud.instance_enis(instance_id)

    def trunk_associations(self, trunk_eni_id: str) -> list[BranchAssociated]:
        """The branch ENIs associated with the trunk now."""
        return self._cloud.trunk_associations(trunk_eni_id)

    def security_state(self) -> SecurityState:
        """Security groups, their rules, and which ENIs (with which addresses) have them, now."""
        return self._cloud.security_state()
