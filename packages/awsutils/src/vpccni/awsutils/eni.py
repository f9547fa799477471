"""ENI lifecycle and address operations on EC2 (docs/design/upstream-contract.md §5)."""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vpccni.awsutils.backoff import CREATE_TAGS_BACKOFF, DELETE_BACKOFF, DETACH_BACKOFF, Backoff, retry
from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.ec2api import EC2Api
from vpccni.awsutils.errors import (
    AttachmentLimitExceededError,
    AwsUtilsError,
    Ec2Error,
    EniNotFoundError,
    SubnetExhaustedError,
    UnauthorizedOperationError,
)
from vpccni.awsutils.models import AllocatedEni, Ec2Eni
from vpccni.awsutils.tags import TagSettings, eni_description, tags_dict, tags_to_set

log = logging.getLogger(__name__)

MAX_DEVICE_INDEX = 100  # EC2 device indexes 0..99 per network card
DEFAULT_FREE_WAIT_S = 2.0  # detach takes 2-3 s before EC2 allows the delete
# A device index just attached stays reserved this long: DescribeInstances is eventually consistent and may
# not list the new attachment at once, and another ENI of this node may be attaching meanwhile.
DEVICE_INDEX_HOLD_S = 60.0
IN_USE_CODE = "InvalidNetworkInterface.InUse"


def _transient(exc: Exception) -> bool:
    """Retry everything except errors a retry cannot fix."""
    return isinstance(exc, Ec2Error) and not isinstance(exc, UnauthorizedOperationError | EniNotFoundError)


def eni_from_ec2(raw: Mapping[str, Any]) -> Ec2Eni:
    attachment = raw.get("Attachment") or {}
    addrs = sorted(raw.get("PrivateIpAddresses", []), key=lambda a: not a.get("Primary", False))
    primary = raw.get("PrivateIpAddress")
    return Ec2Eni(
        eni_id=str(raw["NetworkInterfaceId"]),
        mac=str(raw.get("MacAddress", "")),
        status=str(raw.get("Status", "")),
        subnet_id=str(raw.get("SubnetId", "")),
        vpc_id=str(raw.get("VpcId", "")),
        description=str(raw.get("Description", "")),
        interface_type=str(raw.get("InterfaceType", "interface")),
        device_index=int(attachment["DeviceIndex"]) if "DeviceIndex" in attachment else None,
        network_card=int(attachment.get("NetworkCardIndex", 0) or 0),
        attachment_id=attachment.get("AttachmentId"),
        instance_id=attachment.get("InstanceId"),
        primary_ipv4=ipaddress.IPv4Address(primary) if primary else None,
        ipv4_addresses=tuple(ipaddress.IPv4Address(a["PrivateIpAddress"]) for a in addrs),
        ipv4_prefixes=tuple(ipaddress.IPv4Network(p["Ipv4Prefix"]) for p in raw.get("Ipv4Prefixes", [])),
        ipv6_addresses=tuple(ipaddress.IPv6Address(a["Ipv6Address"]) for a in raw.get("Ipv6Addresses", [])),
        ipv6_prefixes=tuple(ipaddress.IPv6Network(p["Ipv6Prefix"]) for p in raw.get("Ipv6Prefixes", [])),
        security_groups=tuple(str(g["GroupId"]) for g in raw.get("Groups", [])),
        tags=tags_dict(raw.get("TagSet") or raw.get("Tags")),
    )


class EniManager:
    """Allocates, frees and (un)assigns addresses on this instance's ENIs through an :class:`EC2Api`."""

    def __init__(
        self,
        ec2: EC2Api,
        *,
        instance_id: str,
        tag_settings: TagSettings | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        free_wait_s: float = DEFAULT_FREE_WAIT_S,
    ) -> None:
        self._ec2 = ec2
        self.instance_id = instance_id
        self.tag_settings = tag_settings or TagSettings()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.free_wait_s = free_wait_s
        self._indexes_lock = threading.Lock()
        self._held: dict[tuple[int, int], float] = {}  # (card, device index) -> held until (monotonic)

    def _retry(self, call: Callable[[], None], policy: Backoff, what: str) -> None:
        """Upstream's app-level back-off; permission and not-found errors are final."""
        retry(call, policy=policy, clock=self._clock, retry_on=_transient, what=what, rng=self._rng)

    # ---- allocate --------------------------------------------------------------------------------
    def allocate_eni(
        self,
        *,
        subnet_ids: Sequence[str],
        security_groups: Sequence[str],
        ip_count: int = 0,
        prefix_count: int = 0,
        network_card: int = 0,
        connection_tracking: Mapping[str, Any] | None = None,
    ) -> AllocatedEni:
        """Create an ENI in the first subnet that has room, attach it and set DeleteOnTermination.

        ``ip_count`` secondary IPv4s or ``prefix_count`` /28 prefixes (not both). If attach or modify
        fails, the new ENI is deleted again, so a failure never leaks one.
        """
        if ip_count and prefix_count:
            raise ValueError("ask for secondary IPs or prefixes, not both")
        if not subnet_ids:
            raise AwsUtilsError(
                "no subnet qualifies for a new ENI: tag a subnet in this AZ with kubernetes.io/role/cni=1, "
                "or remove kubernetes.io/role/cni=0 from the node's subnet"
            )
        created: dict[str, Any] | None = None
        last_exhausted: SubnetExhaustedError | None = None
        exhausted: list[str] = []
        for subnet_id in subnet_ids:
            try:
                created = self._create(
                    subnet_id, security_groups, ip_count, prefix_count, connection_tracking
                )
                break
            except SubnetExhaustedError as exc:
                log.warning(
                    "subnet %s cannot hold a new ENI (%s); trying the next subnet", subnet_id, exc.code
                )
                last_exhausted = exc
                exhausted.append(exc.subnet_id or subnet_id)
        if created is None:
            assert last_exhausted is not None
            raise type(last_exhausted)(
                f"no candidate subnet can hold a new ENI ({', '.join(exhausted)}): {last_exhausted}",
                api=last_exhausted.api, code=last_exhausted.code, request_id=last_exhausted.request_id,
                subnet_id=last_exhausted.subnet_id or exhausted[-1], subnet_ids=tuple(exhausted),
            )  # fmt: skip
        eni = eni_from_ec2(created)
        device_index = -1
        try:
            device_index = self.free_device_index(network_card)
            attachment_id = self._attach(eni.eni_id, device_index, network_card)
            self._ec2.modify_network_interface_attribute(
                NetworkInterfaceId=eni.eni_id,
                Attachment={"AttachmentId": attachment_id, "DeleteOnTermination": True},
            )
        except Exception:
            log.warning("attaching new ENI %s failed; deleting it so it does not leak", eni.eni_id)
            self._release_device_index(network_card, device_index)
            self._cleanup_failed(eni.eni_id)
            raise
        log.info(
            "allocated ENI %s in %s at device %d card %d",
            eni.eni_id,
            eni.subnet_id,
            device_index,
            network_card,
        )
        return AllocatedEni(
            eni_id=eni.eni_id,
            mac=eni.mac,
            subnet_id=eni.subnet_id,
            device_index=device_index,
            network_card=network_card,
            attachment_id=attachment_id,
            primary_ipv4=eni.primary_ipv4,
            secondary_ipv4s=eni.ipv4_addresses[1:],
            ipv4_prefixes=eni.ipv4_prefixes,
        )

    def _create(
        self,
        subnet_id: str,
        security_groups: Sequence[str],
        ip_count: int,
        prefix_count: int,
        connection_tracking: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        tags = self.tag_settings.creation_tags(self.instance_id, self._clock.now())
        params: dict[str, Any] = {
            "SubnetId": subnet_id,
            "Description": eni_description(self.instance_id),
            "Groups": list(security_groups),
            "TagSpecifications": [
                {
                    "ResourceType": "network-interface",
                    "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
                }
            ],
        }
        if prefix_count:
            params["Ipv4PrefixCount"] = prefix_count
        elif ip_count:
            params["SecondaryPrivateIpAddressCount"] = ip_count
        if connection_tracking:
            params["ConnectionTrackingSpecification"] = dict(connection_tracking)
        return self._ec2.create_network_interface(**params)

    def _attach(self, eni_id: str, device_index: int, network_card: int) -> str:
        """AttachNetworkInterface; the attachment id.

        When the answer to an attach EC2 carried out was lost (a timeout, then the SDK's retry), the retry
        finds the ENI in use: in use by this instance at this index is the attach asked for, not a failure.
        """
        try:
            return self._ec2.attach_network_interface(
                eni_id=eni_id,
                instance_id=self.instance_id,
                device_index=device_index,
                network_card=network_card,
            )
        except Ec2Error as exc:
            if exc.code != IN_USE_CODE:
                raise
            found = self._ec2.describe_network_interfaces(
                filters=[{"Name": "network-interface-id", "Values": [eni_id]}]
            )
            attachment = (found[0].get("Attachment") or {}) if found else {}
            if (
                attachment.get("InstanceId") != self.instance_id
                or attachment.get("DeviceIndex") != device_index
            ):
                raise
            log.info("ENI %s is attached at device %d already (a retried attach)", eni_id, device_index)
            return str(attachment["AttachmentId"])

    def _cleanup_failed(self, eni_id: str) -> None:
        try:
            self.free_eni(eni_id)
        except Exception as exc:  # the original error matters more; the leak sweep catches this one later
            log.error(
                "could not delete ENI %s after a failed attach: %s (the leak sweep will retry)", eni_id, exc
            )

    def free_device_index(self, network_card: int = 0) -> int:
        """The lowest device index on ``network_card`` that DescribeInstances does not list and no other
        allocation of this node holds; it is held for this one (released by `_release_device_index`, or
        after `DEVICE_INDEX_HOLD_S`), so ENIs attached at once get distinct indexes."""
        instance = self._ec2.describe_instance(self.instance_id)
        used = set()
        for iface in instance.get("NetworkInterfaces", []):
            att = iface.get("Attachment") or {}
            if int(att.get("NetworkCardIndex", 0) or 0) == network_card and "DeviceIndex" in att:
                used.add(int(att["DeviceIndex"]))
        now = self._clock.monotonic()
        with self._indexes_lock:
            self._held = {key: until for key, until in self._held.items() if until > now}
            used |= {index for card, index in self._held if card == network_card}
            for index in range(MAX_DEVICE_INDEX):
                if index not in used:
                    self._held[(network_card, index)] = now + DEVICE_INDEX_HOLD_S
                    return index
        raise AttachmentLimitExceededError(
            f"no free device index on network card {network_card} of {self.instance_id}",
            api="AttachNetworkInterface",
            code="AttachmentLimitExceeded",
        )

    def _release_device_index(self, network_card: int, device_index: int) -> None:
        with self._indexes_lock:
            self._held.pop((network_card, device_index), None)

    # ---- free ------------------------------------------------------------------------------------
    def free_eni(self, eni_id: str) -> None:
        """Detach (back-off), wait ``free_wait_s``, delete (back-off). A missing ENI counts as freed."""
        found = self._ec2.describe_network_interfaces(
            filters=[{"Name": "network-interface-id", "Values": [eni_id]}]
        )
        if not found:
            log.info("ENI %s is already gone", eni_id)
            return
        attachment_id = (found[0].get("Attachment") or {}).get("AttachmentId")
        if attachment_id:
            try:
                self._retry(
                    lambda: self._ec2.detach_network_interface(attachment_id=attachment_id),
                    DETACH_BACKOFF,
                    f"detach {eni_id}",
                )
            except EniNotFoundError:
                return
            self._clock.sleep(self.free_wait_s)
        self.delete_eni(eni_id)

    def delete_eni(self, eni_id: str) -> None:
        """DeleteNetworkInterface with back-off; not-found counts as success."""
        try:
            self._retry(
                lambda: self._ec2.delete_network_interface(eni_id=eni_id), DELETE_BACKOFF, f"delete {eni_id}"
            )
        except EniNotFoundError:
            pass
        log.info("deleted ENI %s", eni_id)

    # ---- addresses -------------------------------------------------------------------------------
    def assign_ipv4s(self, eni_id: str, count: int) -> list[ipaddress.IPv4Address]:
        """Add ``count`` secondary IPv4s; returns the new addresses EC2 reports."""
        out = self._ec2.assign_private_ip_addresses(eni_id=eni_id, ip_count=count)
        return [
            ipaddress.IPv4Address(a["PrivateIpAddress"]) for a in out.get("AssignedPrivateIpAddresses", [])
        ]

    def assign_prefixes(self, eni_id: str, count: int) -> list[ipaddress.IPv4Network]:
        """Add ``count`` /28 IPv4 prefixes; returns the new prefixes."""
        out = self._ec2.assign_private_ip_addresses(eni_id=eni_id, prefix_count=count)
        return [ipaddress.IPv4Network(p["Ipv4Prefix"]) for p in out.get("AssignedIpv4Prefixes", [])]

    def unassign_ipv4s(self, eni_id: str, ips: Sequence[ipaddress.IPv4Address]) -> None:
        if ips:
            self._ec2.unassign_private_ip_addresses(eni_id=eni_id, ips=[str(i) for i in ips])

    def unassign_prefixes(self, eni_id: str, prefixes: Sequence[ipaddress.IPv4Network]) -> None:
        if prefixes:
            self._ec2.unassign_private_ip_addresses(eni_id=eni_id, prefixes=[str(p) for p in prefixes])

    def assign_ipv6_prefix(self, eni_id: str) -> list[ipaddress.IPv6Network]:
        """IPv6 mode: one /80 prefix on the ENI."""
        out = self._ec2.assign_ipv6_addresses(eni_id=eni_id, prefix_count=1)
        return [ipaddress.IPv6Network(p) for p in out.get("AssignedIpv6Prefixes", [])]

    def unassign_ipv6_prefixes(self, eni_id: str, prefixes: Sequence[ipaddress.IPv6Network]) -> None:
        if prefixes:
            self._ec2.unassign_ipv6_addresses(eni_id=eni_id, prefixes=[str(p) for p in prefixes])

    def set_security_groups(self, eni_id: str, groups: Sequence[str]) -> None:
        self._ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=list(groups))

    # ---- describe and tag ------------------------------------------------------------------------
    def describe_enis(self, eni_ids: Sequence[str]) -> dict[str, Ec2Eni]:
        """EC2's view of those of these ENIs that are attached to this instance (ids EC2 does not know, or
        that are attached elsewhere, are left out: IMDS was stale).

        One query filtered to this instance: filtered queries draw on EC2's larger request bucket (an
        id-list query without a filter draws on the small one), and the answer is this node's alone."""
        wanted = list(dict.fromkeys(eni_ids))
        if not wanted:
            return {}
        raw = self._ec2.describe_network_interfaces(
            filters=[
                {"Name": "attachment.instance-id", "Values": [self.instance_id]},
                {"Name": "network-interface-id", "Values": wanted},
            ]
        )
        found = (eni_from_ec2(item) for item in raw)
        return {eni.eni_id: eni for eni in found}

    def ensure_tags(self, eni_id: str, current: Mapping[str, str]) -> dict[str, str]:
        """CreateTags for managed tags missing from or different in ``current``; returns what was set."""
        missing = tags_to_set(current, self.tag_settings.managed_tags(self.instance_id))
        if missing:
            self.create_tags(eni_id, missing)
        return missing

    def create_tags(self, eni_id: str, tags: Mapping[str, str]) -> None:
        self._retry(
            lambda: self._ec2.create_tags(resources=[eni_id], tags=tags), CREATE_TAGS_BACKOFF, f"tag {eni_id}"
        )
