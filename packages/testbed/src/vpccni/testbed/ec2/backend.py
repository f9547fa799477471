"""Read-only views over moto's in-process EC2 backend for one testbed account and region."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from moto.ec2.models import ec2_backends
from vpccni.testbed.ec2.errors import Ec2Error

# moto keys an instance's ENIs by device index alone; EC2 allows the same device index on each network card.
# The layer stores card * CARD_STRIDE + device index in moto and splits it back everywhere it shows.
CARD_STRIDE = 100


def split_index(moto_index: int) -> tuple[int, int]:
    """(network card, device index) of moto's combined index."""
    return divmod(int(moto_index), CARD_STRIDE)


@dataclass(frozen=True, kw_only=True)
class EniView:
    eni_id: str
    mac: str
    subnet_id: str
    vpc_id: str
    primary_ip: ipaddress.IPv4Address
    secondary_ips: list[ipaddress.IPv4Address]
    ipv6_addresses: list[ipaddress.IPv6Address]
    security_group_ids: list[str]
    instance_id: str | None
    device_index: int | None
    network_card: int | None
    attachment_id: str | None


class MotoBackend:
    """Thin accessors so the fidelity layer never reaches into moto's objects in more than one place."""

    def __init__(self, *, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region

    @property
    def raw(self) -> Any:
        return ec2_backends[self.account_id][self.region]

    def reset(self) -> None:
        ec2_backends[self.account_id].reset()

    def eni(self, eni_id: str) -> Any:
        eni = self.raw.enis.get(eni_id)
        if eni is None:
            raise Ec2Error(
                "InvalidNetworkInterfaceID.NotFound", f"The networkInterface ID '{eni_id}' does not exist"
            )
        return eni

    def eni_view(self, eni_id: str) -> EniView:
        eni = self.eni(eni_id)
        primary = ipaddress.IPv4Address(eni.private_ip_address)
        secondaries = [
            ipaddress.IPv4Address(item["PrivateIpAddress"])
            for item in eni.private_ip_addresses
            if ipaddress.IPv4Address(item["PrivateIpAddress"]) != primary
        ]
        return EniView(
            eni_id=eni.id,
            mac=eni.mac_address,
            subnet_id=eni.subnet.id,
            vpc_id=eni.subnet.vpc_id,
            primary_ip=primary,
            secondary_ips=secondaries,
            ipv6_addresses=[ipaddress.IPv6Address(ip) for ip in eni.ipv6_addresses],
            security_group_ids=[g.id for g in eni._group_set],
            instance_id=eni.instance.id if eni.instance is not None else None,
            device_index=split_index(eni.device_index)[1] if eni.instance is not None else None,
            network_card=split_index(eni.device_index)[0] if eni.instance is not None else None,
            attachment_id=eni.attachment_id,
        )

    def eni_ids(self) -> list[str]:
        return list(self.raw.enis)

    def eni_by_attachment(self, attachment_id: str) -> Any:
        for eni in list(self.raw.enis.values()):
            if eni.attachment_id == attachment_id:
                return eni
        raise Ec2Error("InvalidAttachmentID.NotFound", f"The attachment ID '{attachment_id}' does not exist")

    def instance(self, instance_id: str) -> Any:
        for reservation in self.raw.reservations.values():
            for inst in reservation.instances:
                if inst.id == instance_id:
                    return inst
        raise Ec2Error("InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")

    def instance_ids(self) -> list[str]:
        return [
            inst.id
            for res in list(self.raw.reservations.values())
            for inst in res.instances
            if inst.state != "terminated"
        ]

    def instance_enis(self, instance_id: str) -> dict[int, Any]:
        """Attached ENIs by device index."""
        return dict(self.instance(instance_id).nics)

    def subnet(self, subnet_id: str) -> Any:
        for per_az in list(self.raw.subnets.values()):
            if subnet_id in per_az:
                return per_az[subnet_id]
        raise Ec2Error("InvalidSubnetID.NotFound", f"The subnet ID '{subnet_id}' does not exist")

    def subnet_cidr(self, subnet_id: str) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet(subnet_id).cidr_block)

    def subnet_ipv6_cidr(self, subnet_id: str) -> ipaddress.IPv6Network | None:
        """The subnet's IPv6 CIDR (its first associated one), None for an IPv4-only subnet."""
        for association in self.subnet(subnet_id).ipv6_cidr_block_associations.values():
            return ipaddress.IPv6Network(association["ipv6CidrBlock"])
        return None

    def subnet_ipv6_addresses(self, subnet_id: str) -> set[ipaddress.IPv6Address]:
        """Every IPv6 address held by an ENI in the subnet."""
        return {
            ipaddress.IPv6Address(ip)
            for eni in list(self.raw.enis.values())
            if eni.subnet.id == subnet_id
            for ip in eni.ipv6_addresses
        }

    def vpc_ipv6_cidrs(self, vpc_id: str) -> list[ipaddress.IPv6Network]:
        vpc = self.raw.get_vpc(vpc_id)
        return [ipaddress.IPv6Network(a["ipv6CidrBlock"]) for a in vpc.ipv6_cidr_block_association_set]

    def set_vpc_ipv6_cidr(self, vpc_id: str, cidr: ipaddress.IPv6Network) -> None:
        """Give the VPC this /56 in place of the random one moto drew (the testbed's own, like BYOIP)."""
        vpc = self.raw.get_vpc(vpc_id)
        for association in vpc._cidr_block_association_set.values():
            if ":" in association["cidr_block"]:
                association["cidr_block"] = str(cidr)
                return
        raise Ec2Error("InvalidVpcID.NotFound", f"VPC {vpc_id} has no IPv6 CIDR to replace")

    def set_eni_ipv6_addresses(self, eni_id: str, addresses: list[ipaddress.IPv6Address]) -> None:
        self.eni(eni_id).ipv6_addresses = [str(ip) for ip in addresses]

    def subnet_ids(self) -> list[str]:
        return [sid for per_az in list(self.raw.subnets.values()) for sid in list(per_az)]

    def subnet_ips(self, subnet_id: str) -> set[ipaddress.IPv4Address]:
        """Every private IPv4 held by an ENI in the subnet."""
        out: set[ipaddress.IPv4Address] = set()
        for eni in list(self.raw.enis.values()):
            if eni.subnet.id == subnet_id:
                out.update(ipaddress.IPv4Address(i["PrivateIpAddress"]) for i in eni.private_ip_addresses)
        return out

    def vpc_cidrs(self, vpc_id: str) -> list[ipaddress.IPv4Network]:
        vpc = self.raw.get_vpc(vpc_id)
        cidrs = [ipaddress.IPv4Network(vpc.cidr_block)]
        for assoc in vpc.cidr_block_association_set:
            block = ipaddress.IPv4Network(assoc["cidr_block"])
            if (
                assoc.get("cidr_block_state", {}).get("state", "associated") == "associated"
                and block not in cidrs
            ):
                cidrs.append(block)
        return cidrs
