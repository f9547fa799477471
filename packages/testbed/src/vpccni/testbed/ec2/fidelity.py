"""The EC2 behaviour moto lacks: instance-type ENI/IP limits, /28 and IPv6 /80 prefix delegation, subnet
accounting (IPv4 and IPv6).

Each hook runs under the server's state lock. It either answers itself (`Handled`) or rewrites the request
for moto (`Forward`) and post-processes moto's answer; both carry the events to publish.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vpccni.testbed.ec2 import xmlpatch
from vpccni.testbed.ec2.addresses import PREFIX_LEN, AddressAllocator, SubnetUsage, reserved_addresses
from vpccni.testbed.ec2.backend import CARD_STRIDE, MotoBackend, split_index
from vpccni.testbed.ec2.errors import Ec2Error
from vpccni.testbed.ec2.instance_types import UnknownInstanceTypeError, limits_for
from vpccni.testbed.ec2.ipv6 import Ipv6Allocator
from vpccni.testbed.ec2.ipv6_calls import Ipv6Calls
from vpccni.testbed.ec2.prefixes import PrefixTable
from vpccni.testbed.ec2.query import indexed, integer, ipv4
from vpccni.testbed.ec2.trunking import Trunking
from vpccni.testbed.events import AddressesChanged, EniAttached, EniDetached, Event

Params = dict[str, str]
# The most IPv4 addresses any instance type allows per ENI; an unattached ENI is held to it.
UNATTACHED_IPV4_LIMIT = 50


@dataclass(frozen=True, kw_only=True)
class Handled:
    body: bytes
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Forward:
    params: Params
    finish: Callable[[bytes], tuple[bytes, list[Event]]] | None = None


Plan = Handled | Forward


def _handled(reply: tuple[bytes, list[Event]]) -> Handled:
    return Handled(body=reply[0], events=reply[1])


def _without(params: Params, *prefixes: str) -> Params:
    return {k: v for k, v in params.items() if not any(k == p or k.startswith(p + ".") for p in prefixes)}


class FidelityLayer:
    def subnet_of_call(self, action: str, params: dict[str, str]) -> str | None:
        """The subnet a call is about: a new ENI's `SubnetId`, or the subnet of the ENI it names."""
        if action == "CreateNetworkInterface":
            return params.get("SubnetId")
        eni = self._backend.raw.enis.get(params.get("NetworkInterfaceId", ""))
        return None if eni is None else str(eni.subnet.id)

    def __init__(
        self,
        *,
        backend: MotoBackend,
        prefixes: PrefixTable[ipaddress.IPv4Network],
        allocator: AddressAllocator,
        ipv6_prefixes: PrefixTable[ipaddress.IPv6Network] | None = None,
        ipv6_allocator: Ipv6Allocator | None = None,
    ) -> None:
        self._backend = backend
        self._prefixes = prefixes
        self._allocator = allocator
        self.trunking = Trunking(backend=backend)
        self._ipv6_prefixes: PrefixTable[ipaddress.IPv6Network] = ipv6_prefixes or PrefixTable()
        self.ipv6 = Ipv6Calls(
            backend=backend,
            prefixes=self._ipv6_prefixes,
            allocator=ipv6_allocator or Ipv6Allocator(),
            check_prefix_support=self._check_prefix_support,
        )
        self._hooks: dict[str, Callable[[Params], Plan]] = {
            "AssociateTrunkInterface": lambda p: _handled(self.trunking.associate(p)),
            "DisassociateTrunkInterface": lambda p: _handled(self.trunking.disassociate(p)),
            "DescribeTrunkInterfaceAssociations": lambda p: _handled(self.trunking.describe(p)),
            "RunInstances": self._run_instances,
            "CreateNetworkInterface": self._create_eni,
            "AssignPrivateIpAddresses": self._assign,
            "UnassignPrivateIpAddresses": self._unassign,
            "AttachNetworkInterface": self._attach,
            "DetachNetworkInterface": self._detach,
            "DeleteNetworkInterface": self._delete,
            "ModifyNetworkInterfaceAttribute": self._modify,
            "TerminateInstances": self._terminate,
            "DescribeNetworkInterfaces": self._with_prefixes,
            "DescribeInstances": self._with_prefixes,
            "DescribeSubnets": self._describe_subnets,
            "AssignIpv6Addresses": lambda p: _handled(self.ipv6.assign(p)),
            "UnassignIpv6Addresses": lambda p: _handled(self.ipv6.unassign(p)),
        }

    def plan(self, action: str, params: Params) -> Plan:
        hook = self._hooks.get(action)
        return hook(params) if hook else Forward(params=params)

    # ---- state views
    def usage(self, subnet_id: str) -> SubnetUsage:
        prefixes = [
            p
            for eni, ps in self._prefixes.all().items()
            if eni in self._backend.raw.enis and self._backend.raw.enis[eni].subnet.id == subnet_id
            for p in ps
        ]
        return SubnetUsage(
            cidr=self._backend.subnet_cidr(subnet_id),
            ips=frozenset(self._backend.subnet_ips(subnet_id)),
            prefixes=frozenset(prefixes),
        )

    def _available_counts(self) -> dict[str, int]:
        """`SubnetUsage.available_count` of every subnet in one pass over the ENIs (the allocator never lets
        an ENI's addresses, its prefixes and the reserved addresses overlap, so counting them is enough)."""
        held: dict[str, int] = {}
        prefixes = self._prefixes.all()
        for eni_id, eni in list(self._backend.raw.enis.items()):
            count = len(eni.private_ip_addresses) + (1 << (32 - PREFIX_LEN)) * len(prefixes.get(eni_id, ()))
            held[eni.subnet.id] = held.get(eni.subnet.id, 0) + count
        out = {}
        for subnet_id in self._backend.subnet_ids():
            cidr = self._backend.subnet_cidr(subnet_id)
            out[subnet_id] = cidr.num_addresses - len(reserved_addresses(cidr)) - held.get(subnet_id, 0)
        return out

    def attachment_slot(self, eni_id: str) -> tuple[int, int] | None:
        """(network card, device index) of an attached ENI, None when it is not attached."""
        eni = self._backend.raw.enis.get(eni_id)
        if eni is None or eni.instance is None:
            return None
        return split_index(eni.device_index)

    def _slots(self, eni_id: str) -> int:
        """Address slots an ENI uses: primary + secondaries + one per /28 prefix (as EC2 counts them)."""
        return len(self._backend.eni(eni_id).private_ip_addresses) + len(self._prefixes.of(eni_id))

    def _ipv4_limit(self, eni: Any) -> int:
        if eni.instance is None:
            return UNATTACHED_IPV4_LIMIT
        return limits_for(eni.instance.instance_type).ipv4_per_eni

    def _check_prefix_support(self, eni: Any) -> None:
        if eni.instance is not None and not limits_for(eni.instance.instance_type).supports_prefix_delegation:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Prefix delegation is not supported for instance type {eni.instance.instance_type} "
                f"of {eni.instance.id}: use a Nitro instance type or secondary IPs",
            )

    # ---- hooks
    def _run_instances(self, params: Params) -> Plan:
        itype = params.get("InstanceType", "m1.small")
        try:
            limits_for(itype)
        except UnknownInstanceTypeError as exc:
            raise Ec2Error("InvalidParameterValue", str(exc)) from exc
        single = params.get("MinCount", "1") == "1" and params.get("MaxCount", "1") == "1"
        if single and "SubnetId" in params and "PrivateIpAddress" not in params:
            # moto picks random, possibly colliding, addresses; take a free one from the subnet accounting.
            (ip,) = self._allocator.pick_ips(self.usage(params["SubnetId"]), 1)
            params = {**params, "PrivateIpAddress": str(ip)}
        ipv6: list[ipaddress.IPv6Address] = []
        if single and "SubnetId" in params and integer(params, "Ipv6AddressCount"):
            # Likewise for IPv6 (moto draws at random, ignoring delegated /80s).
            ipv6 = self.ipv6.allocator.pick_addresses(
                self.ipv6.usage(params["SubnetId"]), integer(params, "Ipv6AddressCount")
            )
            params = _without(params, "Ipv6AddressCount")

        def finish(body: bytes) -> tuple[bytes, list[Event]]:
            events: list[Event] = []
            for instance_id in xmlpatch.find_texts(body, "instanceId"):
                for index, eni in self._backend.instance_enis(instance_id).items():
                    eni.delete_on_termination = True  # EC2's default for the primary ENI
                    if ipv6 and index == 0:
                        self._backend.set_eni_ipv6_addresses(eni.id, ipv6)
                    events.append(
                        EniAttached(
                            instance_id=instance_id,
                            eni_id=eni.id,
                            mac=eni.mac_address,
                            device_index=split_index(index)[1],
                            network_card=split_index(index)[0],
                        )
                    )
            return self._enrich(body), events

        return Forward(params=params, finish=finish)

    def _create_eni(self, params: Params) -> Plan:
        params, interface_type = self.trunking.create_type(params)
        subnet_id = params.get("SubnetId", "")
        usage = self.usage(subnet_id)
        explicit = [ipv4(v) for v in indexed(params, "PrivateIpAddresses", "PrivateIpAddress")]
        if "PrivateIpAddress" in params:
            explicit.insert(0, ipv4(params["PrivateIpAddress"]))
        for ip in explicit:
            if not usage.is_free(ip):
                raise Ec2Error(
                    "InvalidIPAddress.InUse", f"Address {ip} is in use or not in subnet {subnet_id}"
                )
        secondary_count = integer(params, "SecondaryPrivateIpAddressCount")
        explicit_prefixes = [ipaddress.IPv4Network(v) for v in indexed(params, "Ipv4Prefix", "Ipv4Prefix")]
        prefix_count = integer(params, "Ipv4PrefixCount") + len(explicit_prefixes)
        total = max(1, len(explicit)) + secondary_count + prefix_count
        if total > UNATTACHED_IPV4_LIMIT:
            raise Ec2Error(
                "PrivateIpAddressLimitExceeded",
                f"Number of private addresses ({total}) will exceed the limit of {UNATTACHED_IPV4_LIMIT}",
            )
        missing = max(1, len(explicit)) - len(explicit) + secondary_count
        ips = explicit + self._allocator.pick_ips(usage, missing, also_taken=explicit)
        prefixes = self._take_prefixes(usage, explicit_prefixes, prefix_count - len(explicit_prefixes), ips)
        rewritten = _without(
            params,
            "PrivateIpAddress",
            "PrivateIpAddresses",
            "SecondaryPrivateIpAddressCount",
            "Ipv4Prefix",
            "Ipv4PrefixCount",
        )
        for n, ip in enumerate(ips, start=1):
            rewritten[f"PrivateIpAddresses.{n}.PrivateIpAddress"] = str(ip)
            rewritten[f"PrivateIpAddresses.{n}.Primary"] = "true" if n == 1 else "false"
        for n, ip6 in enumerate(self._new_eni_ipv6(rewritten, subnet_id), start=1):
            rewritten[f"Ipv6Addresses.{n}.Ipv6Address"] = str(ip6)

        def finish(body: bytes) -> tuple[bytes, list[Event]]:
            (eni_id,) = xmlpatch.find_texts(body, "networkInterfaceId")[:1]
            self._prefixes.add(eni_id, prefixes)
            self.trunking.set_type(eni_id, interface_type)
            body = self._enrich(body)
            return body, [AddressesChanged(eni_id=eni_id)]

        return Forward(params=rewritten, finish=finish)

    def _new_eni_ipv6(self, params: Params, subnet_id: str) -> list[ipaddress.IPv6Address]:
        """The IPv6 addresses a new ENI gets (`params`, moto's, lose `Ipv6AddressCount`): that many, or one
        when the subnet assigns IPv6 on creation (as EKS IPv6 clusters' subnets do) and none was asked for;
        free ones of the subnet's /64 (moto draws at random, ignoring delegated /80s)."""
        count = integer(params, "Ipv6AddressCount")
        if not count and not any(k.startswith("Ipv6Addresses.") for k in params):
            count = (
                1 if getattr(self._backend.subnet(subnet_id), "assign_ipv6_address_on_creation", False) else 0
            )
        if not count:
            return []
        params.pop("Ipv6AddressCount", None)
        return self.ipv6.allocator.pick_addresses(self.ipv6.usage(subnet_id), count)

    def _take_prefixes(
        self,
        usage: SubnetUsage,
        explicit: list[ipaddress.IPv4Network],
        count: int,
        also_taken: list[ipaddress.IPv4Address],
    ) -> list[ipaddress.IPv4Network]:
        taken = usage.taken() | set(also_taken)
        for prefix in explicit:
            if (
                prefix.prefixlen != 28
                or not prefix.subnet_of(usage.cidr)
                or any(ip in taken for ip in prefix)
            ):
                raise Ec2Error(
                    "InvalidParameterValue", f"Prefix {prefix} is not a free /28 of subnet {usage.cidr}"
                )
        extra = [ip for p in explicit for ip in p]
        return explicit + self._allocator.pick_prefixes(usage, count, also_taken=[*also_taken, *extra])

    def _assign(self, params: Params) -> Plan:
        eni_id = params.get("NetworkInterfaceId", "")
        eni = self._backend.eni(eni_id)
        explicit = [ipv4(v) for v in indexed(params, "PrivateIpAddress")]
        count = integer(params, "SecondaryPrivateIpAddressCount")
        explicit_prefixes = [ipaddress.IPv4Network(v) for v in indexed(params, "Ipv4Prefix")]
        prefix_count = integer(params, "Ipv4PrefixCount")
        if not (explicit or count or explicit_prefixes or prefix_count):
            raise Ec2Error("MissingParameter", "Specify private IP addresses, a count, or IPv4 prefixes")
        if explicit_prefixes or prefix_count:
            self._check_prefix_support(eni)
        limit = self._ipv4_limit(eni)
        wanted = len(explicit) + count + len(explicit_prefixes) + prefix_count
        if self._slots(eni_id) + wanted > limit:
            raise Ec2Error(
                "PrivateIpAddressLimitExceeded",
                f"Number of private addresses will exceed limit: {eni_id} uses {self._slots(eni_id)} of "
                f"{limit} and {wanted} more were requested",
            )
        usage = self.usage(eni.subnet.id)
        for ip in explicit:
            if not usage.is_free(ip):
                raise Ec2Error(
                    "InvalidIPAddress.InUse", f"Address {ip} is in use or not in subnet {usage.cidr}"
                )
        ips = explicit + self._allocator.pick_ips(usage, count, also_taken=explicit)
        prefixes = self._take_prefixes(usage, explicit_prefixes, prefix_count, ips)
        if ips:
            self._backend.raw.assign_private_ip_addresses(eni_id, [str(ip) for ip in ips])
        self._prefixes.add(eni_id, prefixes)
        body = xmlpatch.render(
            "AssignPrivateIpAddresses",
            [
                ("networkInterfaceId", eni_id),
                ("assignedPrivateIpAddressesSet", [("privateIpAddress", str(ip)) for ip in ips]),
                ("assignedIpv4PrefixSet", [("ipv4Prefix", str(p)) for p in prefixes]),
            ],
        )
        return Handled(body=body, events=[AddressesChanged(eni_id=eni_id)])

    def _unassign(self, params: Params) -> Plan:
        eni_id = params.get("NetworkInterfaceId", "")
        view = self._backend.eni_view(eni_id)
        ips = [ipv4(v) for v in indexed(params, "PrivateIpAddress")]
        prefixes = [ipaddress.IPv4Network(v) for v in indexed(params, "Ipv4Prefix")]
        if not ips and not prefixes:
            raise Ec2Error("MissingParameter", "Specify PrivateIpAddresses or Ipv4Prefixes to unassign")
        if view.primary_ip in ips:
            raise Ec2Error(
                "InvalidParameterValue", f"The primary address {view.primary_ip} cannot be unassigned"
            )
        held = self._prefixes.of(eni_id)
        stray = [str(ip) for ip in ips if ip not in view.secondary_ips] + [
            str(p) for p in prefixes if p not in held
        ]
        if stray:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Some of the specified addresses are not assigned to interface {eni_id}: {stray}",
            )
        if ips:
            self._backend.raw.unassign_private_ip_addresses(eni_id, [str(ip) for ip in ips])
        self._prefixes.remove(eni_id, prefixes)
        body = xmlpatch.render("UnassignPrivateIpAddresses", [("return", "true")])
        return Handled(body=body, events=[AddressesChanged(eni_id=eni_id)])

    def _attach(self, params: Params) -> Plan:
        eni_id = params.get("NetworkInterfaceId", "")
        instance_id = params.get("InstanceId", "")
        eni = self._backend.eni(eni_id)
        instance = self._backend.instance(instance_id)
        limits = limits_for(instance.instance_type)
        device_index = integer(params, "DeviceIndex")
        card = (
            integer(params, "NetworkCardIndex")
            if "NetworkCardIndex" in params
            else limits.default_network_card
        )
        if not 0 <= device_index < CARD_STRIDE:
            raise Ec2Error("InvalidParameterValue", f"DeviceIndex {device_index} is out of range 0..99")
        if eni.instance is not None:
            raise Ec2Error(
                "InvalidNetworkInterface.InUse",
                f"Interface: [{eni_id}] in use by {eni.instance.id}: detach it first",
            )
        self.trunking.check_attach(eni_id, instance.instance_type)
        if card not in limits.enis_per_card:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Network card index {card} does not exist on {instance.instance_type}",
            )
        attached = self._backend.instance_enis(instance_id)
        if card * CARD_STRIDE + device_index in attached:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Instance '{instance_id}' already has an interface attached at device index "
                f"'{device_index}': pick a free DeviceIndex",
            )
        on_card = sum(1 for idx in attached if split_index(idx)[0] == card)
        if len(attached) >= limits.max_enis or on_card >= limits.enis_per_card[card]:
            raise Ec2Error(
                "AttachmentLimitExceeded",
                f"Interface count {len(attached) + 1} exceeds the limit for {instance.instance_type} "
                f"({limits.max_enis} ENIs, {limits.enis_per_card[card]} on card {card})",
            )
        if self._slots(eni_id) > limits.ipv4_per_eni:
            raise Ec2Error(
                "PrivateIpAddressLimitExceeded",
                f"{eni_id} has {self._slots(eni_id)} addresses, more than {limits.ipv4_per_eni} "
                f"allowed per ENI on {instance.instance_type}",
            )
        if (
            self._prefixes.of(eni_id) or self._ipv6_prefixes.of(eni_id)
        ) and not limits.supports_prefix_delegation:
            raise Ec2Error(
                "InvalidParameterValue",
                f"{instance.instance_type} does not support prefix delegation; {eni_id} has prefixes",
            )

        def finish(body: bytes) -> tuple[bytes, list[Event]]:
            event = EniAttached(
                instance_id=instance_id,
                eni_id=eni_id,
                mac=eni.mac_address,
                device_index=device_index,
                network_card=card,
            )
            return xmlpatch.set_text(body, "networkCardIndex", str(card)), [event]

        moto_params = {
            **_without(params, "NetworkCardIndex"),
            "DeviceIndex": str(card * CARD_STRIDE + device_index),
        }
        return Forward(params=moto_params, finish=finish)

    def _detach(self, params: Params) -> Plan:
        eni = self._backend.eni_by_attachment(params.get("AttachmentId", ""))
        if eni.device_index == 0:
            raise Ec2Error(
                "OperationNotPermitted",
                f"The network interface at device index 0 ({eni.id}) cannot be detached",
            )
        self.trunking.check_detach_or_delete(eni.id)
        event = EniDetached(instance_id=eni.instance.id, eni_id=eni.id, mac=eni.mac_address)

        def finish(body: bytes) -> tuple[bytes, list[Event]]:
            return body, [event]

        return Forward(params=params, finish=finish)

    def _delete(self, params: Params) -> Plan:
        eni_id = params.get("NetworkInterfaceId", "")
        eni = self._backend.eni(eni_id)
        if eni.instance is not None:
            raise Ec2Error(
                "InvalidNetworkInterface.InUse",
                f"Network interface '{eni_id}' is currently in use by {eni.instance.id}: detach it first",
            )

        self.trunking.check_detach_or_delete(eni_id)

        def finish(body: bytes) -> tuple[bytes, list[Event]]:
            self._prefixes.drop(eni_id)
            self._ipv6_prefixes.drop(eni_id)
            return body, self.trunking.forget(eni_id)  # a deleted branch leaves its trunk

        return Forward(params=params, finish=finish)

    def _modify(self, params: Params) -> Plan:
        # moto ignores the attachment's DeleteOnTermination, which upstream sets right after attaching.
        flag = params.get("Attachment.DeleteOnTermination")
        if flag is None:
            return Forward(params=params)
        eni = self._backend.eni(params.get("NetworkInterfaceId", ""))
        if eni.attachment_id != params.get("Attachment.AttachmentId"):
            raise Ec2Error(
                "InvalidAttachmentID.NotFound",
                f"The attachment ID '{params.get('Attachment.AttachmentId')}' is not attached to {eni.id}",
            )
        eni.delete_on_termination = flag.lower() == "true"
        return Handled(body=xmlpatch.render("ModifyNetworkInterfaceAttribute", [("return", "true")]))

    def _terminate(self, params: Params) -> Plan:
        """EC2 detaches every ENI of a terminated instance and deletes those marked DeleteOnTermination."""
        enis = [
            (instance_id, eni)
            for instance_id in indexed(params, "InstanceId")
            for eni in self._backend.instance_enis(instance_id).values()
        ]

        def finish(body: bytes) -> tuple[bytes, list[Event]]:
            events: list[Event] = []
            for instance_id, eni in enis:
                if eni.instance is not None:
                    eni.instance.detach_eni(eni)
                if eni.delete_on_termination:
                    self._backend.raw.enis.pop(eni.id, None)
                    self._prefixes.drop(eni.id)
                    self._ipv6_prefixes.drop(eni.id)
                    events.extend(self.trunking.forget(eni.id))
                events.append(EniDetached(instance_id=instance_id, eni_id=eni.id, mac=eni.mac_address))
            return body, events

        return Forward(params=params, finish=finish)

    def _enrich(self, body: bytes) -> bytes:
        return xmlpatch.enrich_enis(
            body,
            self._prefixes.of,
            self.attachment_slot,
            type_of=self.trunking.interface_type,
            ipv6_prefixes_of=self._ipv6_prefixes.of,
        )

    def _with_prefixes(self, params: Params) -> Plan:
        def finish(body: bytes) -> tuple[bytes, list[Event]]:
            return self._enrich(body), []

        return Forward(params=params, finish=finish)

    def _describe_subnets(self, params: Params) -> Plan:
        def finish(body: bytes) -> tuple[bytes, list[Event]]:
            return xmlpatch.set_available_counts(body, self._available_counts()), []

        return Forward(params=params, finish=finish)
