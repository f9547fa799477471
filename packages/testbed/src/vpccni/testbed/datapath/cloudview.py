"""`CloudView` over the testbed's `Cloud`: its events and ENI addresses, plus the two look-ups the datapath
needs that `Cloud` does not offer itself (a subnet's CIDR, the ENIs attached to an instance), asked through
its EC2 API.

Safe to call from an event callback: `Cloud` publishes after releasing its state lock, and its server is
threaded.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import Any, Protocol

from vpccni.testbed.events import EniAttached


class _Cloud(Protocol):
    def subscribe(self, callback: Callable[[Any], None]) -> None: ...

    def eni_addresses(
        self, eni_id: str
    ) -> tuple[ipaddress.IPv4Address, list[ipaddress.IPv4Address], list[ipaddress.IPv4Network], str]: ...

    def ec2_client(self) -> Any: ...


class Ec2CloudView:
    """The datapath's view of a running `vpccni.testbed.cloud.Cloud`."""

    def __init__(self, cloud: _Cloud) -> None:
        self._cloud = cloud
        self._client: Any = None
        self._subnets: dict[str, ipaddress.IPv4Network] = {}
        self._lock = threading.Lock()

    def subscribe(self, callback: Callable[[object], None]) -> None:
        self._cloud.subscribe(callback)

    def eni_addresses(
        self, eni_id: str
    ) -> tuple[ipaddress.IPv4Address, list[ipaddress.IPv4Address], list[ipaddress.IPv4Network], str]:
        return self._cloud.eni_addresses(eni_id)

    def subnet_cidr(self, subnet_id: str) -> ipaddress.IPv4Network:
        """The subnet's IPv4 CIDR (`DescribeSubnets`, cached: a subnet's CIDR never changes)."""
        with self._lock:
            cached = self._subnets.get(subnet_id)
        if cached is not None:
            return cached
        subnets = self._ec2().describe_subnets(SubnetIds=[subnet_id])["Subnets"]
        cidr = ipaddress.IPv4Network(subnets[0]["CidrBlock"])
        with self._lock:
            self._subnets[subnet_id] = cidr
        return cidr

    def instance_enis(self, instance_id: str) -> list[EniAttached]:
        """The ENIs attached to the instance now (`DescribeNetworkInterfaces` by attachment.instance-id)."""
        resp = self._ec2().describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
        )
        attached = []
        for eni in resp["NetworkInterfaces"]:
            attachment = eni.get("Attachment") or {}
            if attachment.get("Status", "attached") not in ("attaching", "attached"):
                continue
            attached.append(
                EniAttached(
                    instance_id=instance_id,
                    eni_id=eni["NetworkInterfaceId"],
                    mac=eni["MacAddress"],
                    device_index=int(attachment["DeviceIndex"]),
                    network_card=int(attachment.get("NetworkCardIndex", 0)),
                )
            )
        return sorted(attached, key=lambda a: (a.network_card, a.device_index))

    def _ec2(self) -> Any:
        # boto3 clients are thread-safe; creating one costs ~50 ms, so make it once.
        with self._lock:
            if self._client is None:
                self._client = self._cloud.ec2_client()
            return self._client
