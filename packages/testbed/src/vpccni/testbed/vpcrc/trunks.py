"""The VPC resource controller's EC2 side: a node's trunk ENI (found, or created and attached at a free device
index), and branch ENIs made for pods and associated with the trunk under the lowest free VLAN id.

As upstream: VLAN ids 1-120 (`MaxAllocatableVlanIds` 121, 0 unused); trunk and branch ENIs carry the
descriptions `trunk-eni` / `branch-eni` and the `eks:eni:owner` tag; the trunk is deleted with its instance;
the branch limit per instance type is the controller's table (`vpccni.awsutils.trunking`). In a dual-stack
subnet a branch ENI has an IPv6 address too (the subnet assigns it on creation; the controller asks for
none) and the annotation carries it with the subnet's /64 (`ipv6Addr`, `subnetV6Cidr`), as ENIDetails does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from vpccni.awsutils.trunking import branch_interfaces

log = logging.getLogger(__name__)

MAX_VLAN_ID = 120
TRUNK_DESCRIPTION, BRANCH_DESCRIPTION = "trunk-eni", "branch-eni"
OWNER_TAG = {"Key": "eks:eni:owner", "Value": "eks-vpc-resource-controller"}


class TrunkError(RuntimeError):
    """The node cannot have a trunk, or a branch ENI cannot be made now (the message says why)."""


@dataclass(kw_only=True)
class Trunk:
    node: str
    instance_id: str
    eni_id: str
    subnet_id: str
    subnet_cidr: str
    limit: int  # branch ENIs the instance type takes
    subnet_v6_cidr: str = ""  # the subnet's /64 in a dual-stack VPC
    vlans: dict[int, str] = field(default_factory=dict)  # VLAN id -> branch ENI id, cooling-down ones too

    def free_vlan(self) -> int | None:
        if len(self.vlans) >= self.limit:
            return None
        return next((v for v in range(1, MAX_VLAN_ID + 1) if v not in self.vlans), None)


@dataclass(frozen=True, kw_only=True)
class Branch:
    node: str
    eni_id: str
    mac: str
    private_ip: str
    vlan_id: int
    subnet_cidr: str
    association_id: str = ""
    ipv6_addr: str = ""  # in a dual-stack subnet
    subnet_v6_cidr: str = ""

    def annotation(self) -> str:
        """The `vpc.amazonaws.com/pod-eni` value (the controller's ENIDetails JSON, one entry)."""
        return json.dumps(
            [
                {
                    "eniId": self.eni_id,
                    "ifAddress": self.mac,
                    "privateIp": self.private_ip,
                    "ipv6Addr": self.ipv6_addr,
                    "vlanId": self.vlan_id,
                    "subnetCidr": self.subnet_cidr,
                    "subnetV6Cidr": self.subnet_v6_cidr,
                    "associationID": self.association_id,
                }
            ],
            separators=(",", ":"),
        )

    @classmethod
    def from_annotation(cls, node: str, text: str) -> Branch | None:
        try:
            first = json.loads(text)[0]
            return cls(
                node=node,
                eni_id=str(first["eniId"]),
                mac=str(first["ifAddress"]),
                private_ip=str(first["privateIp"]),
                vlan_id=int(first["vlanId"]),
                subnet_cidr=str(first["subnetCidr"]),
                association_id=str(first.get("associationID", "")),
                ipv6_addr=str(first.get("ipv6Addr") or ""),
                subnet_v6_cidr=str(first.get("subnetV6Cidr") or ""),
            )
        except (ValueError, LookupError, TypeError):
            return None


class TrunkEc2:
    """The controller's EC2 calls (boto3 client)."""

    def __init__(self, ec2: Any) -> None:
        self._ec2 = ec2

    def trunk_for(self, node: str, instance_id: str) -> Trunk:
        """The instance's trunk ENI, created and attached if it has none yet."""
        instance = self._ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        instance_type = instance["InstanceType"]
        limit = branch_interfaces(instance_type)
        if not limit:
            raise TrunkError(f"instance type {instance_type} of {node} does not support trunk ENIs")
        interfaces = instance.get("NetworkInterfaces") or []
        primary = next(n for n in interfaces if n["Attachment"]["DeviceIndex"] == 0)
        existing = next((n for n in interfaces if n.get("InterfaceType") == "trunk"), None)
        if existing is not None:
            trunk = self._trunk(node, instance_id, existing, limit)
            associations = self._ec2.describe_trunk_interface_associations(
                Filters=[{"Name": "trunk-interface-association.trunk-interface-id", "Values": [trunk.eni_id]}]
            )["InterfaceAssociations"]
            trunk.vlans = {int(a["VlanId"]): a["BranchInterfaceId"] for a in associations}
            return trunk
        index = self._free_device_index(instance_type, interfaces)
        created = self._ec2.create_network_interface(
            SubnetId=primary["SubnetId"],
            Groups=[g["GroupId"] for g in primary.get("Groups") or []],
            InterfaceType="trunk",
            Description=TRUNK_DESCRIPTION,
            TagSpecifications=[{"ResourceType": "network-interface", "Tags": [OWNER_TAG]}],
        )["NetworkInterface"]
        try:
            attachment = self._ec2.attach_network_interface(
                NetworkInterfaceId=created["NetworkInterfaceId"], InstanceId=instance_id, DeviceIndex=index
            )["AttachmentId"]
        except ClientError:
            self._ec2.delete_network_interface(NetworkInterfaceId=created["NetworkInterfaceId"])
            raise
        self._ec2.modify_network_interface_attribute(
            NetworkInterfaceId=created["NetworkInterfaceId"],
            Attachment={"AttachmentId": attachment, "DeleteOnTermination": True},
        )
        log.info("%s: trunk ENI %s attached at device %d", node, created["NetworkInterfaceId"], index)
        return self._trunk(node, instance_id, created, limit)

    def create_branch(self, trunk: Trunk, groups: tuple[str, ...]) -> Branch:
        vlan = trunk.free_vlan()
        if vlan is None:
            raise TrunkError(
                f"trunk {trunk.eni_id} on {trunk.node} carries {len(trunk.vlans)} branch ENIs, its limit"
            )
        created = self._ec2.create_network_interface(
            SubnetId=trunk.subnet_id,
            Groups=list(groups),
            InterfaceType="branch",
            Description=BRANCH_DESCRIPTION,
            TagSpecifications=[
                {
                    "ResourceType": "network-interface",
                    "Tags": [
                        OWNER_TAG,
                        {"Key": "vpcresources.k8s.aws/trunk-eni-id", "Value": trunk.eni_id},
                        {"Key": "vpcresources.k8s.aws/vlan-id", "Value": str(vlan)},
                    ],
                }
            ],
        )["NetworkInterface"]
        eni_id = created["NetworkInterfaceId"]
        try:
            association = self._ec2.associate_trunk_interface(
                BranchInterfaceId=eni_id, TrunkInterfaceId=trunk.eni_id, VlanId=vlan
            )["InterfaceAssociation"]["AssociationId"]
        except ClientError:
            self._ec2.delete_network_interface(NetworkInterfaceId=eni_id)
            raise
        trunk.vlans[vlan] = eni_id
        return Branch(
            node=trunk.node,
            eni_id=eni_id,
            mac=created["MacAddress"],
            private_ip=created["PrivateIpAddress"],
            vlan_id=vlan,
            subnet_cidr=trunk.subnet_cidr,
            association_id=association,
            ipv6_addr=created.get("Ipv6Address")
            or next((a["Ipv6Address"] for a in created.get("Ipv6Addresses") or []), ""),
            subnet_v6_cidr=trunk.subnet_v6_cidr,
        )

    def delete_branch(self, eni_id: str) -> None:
        """Delete the branch ENI (its trunk association ends with it); fine when it is already gone."""
        try:
            self._ec2.delete_network_interface(NetworkInterfaceId=eni_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "InvalidNetworkInterfaceID.NotFound":
                raise

    def _trunk(self, node: str, instance_id: str, eni: dict[str, Any], limit: int) -> Trunk:
        subnet = self._ec2.describe_subnets(SubnetIds=[eni["SubnetId"]])["Subnets"][0]
        return Trunk(
            node=node,
            instance_id=instance_id,
            eni_id=eni["NetworkInterfaceId"],
            subnet_id=eni["SubnetId"],
            subnet_cidr=subnet["CidrBlock"],
            limit=limit,
            subnet_v6_cidr=next(
                (a["Ipv6CidrBlock"] for a in subnet.get("Ipv6CidrBlockAssociationSet") or []), ""
            ),
        )

    def _free_device_index(self, instance_type: str, interfaces: list[dict[str, Any]]) -> int:
        info = self._ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"][0]
        cards = info["NetworkInfo"].get("NetworkCards") or []
        card0 = next((c for c in cards if c.get("NetworkCardIndex", 0) == 0), None)
        max_enis = int((card0 or info["NetworkInfo"])["MaximumNetworkInterfaces"])
        used = {
            n["Attachment"]["DeviceIndex"]
            for n in interfaces
            if n["Attachment"].get("NetworkCardIndex", 0) == 0
        }
        free = next((i for i in range(1, max_enis) if i not in used), None)
        if free is None:
            raise TrunkError(
                f"no free ENI slot for a trunk ({len(used)} of {max_enis} in use): ipamd should keep one "
                "(ENABLE_POD_ENI reserves it)"
            )
        return free
