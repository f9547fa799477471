"""Trunk and branch ENIs (security groups for pods) against the testbed, through boto3: interface types,
trunk associations with VLAN ids, the per-type branch limit, and what a trunk with branches refuses."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from vpccni.testbed.cloud import Cloud, InstanceInfo
from vpccni.testbed.events import BranchAssociated, BranchDisassociated

NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def new_eni(ec2: Any, cloud: Cloud, kind: str | None = None) -> str:
    extra = {"InterfaceType": kind} if kind else {}
    resp = ec2.create_network_interface(
        SubnetId=cloud.subnet_ids[0], Groups=[cloud.security_group_id], **extra
    )
    return str(resp["NetworkInterface"]["NetworkInterfaceId"])


def attached_trunk(ec2: Any, cloud: Cloud, instance: InstanceInfo) -> str:
    trunk = new_eni(ec2, cloud, "trunk")
    ec2.attach_network_interface(NetworkInterfaceId=trunk, InstanceId=instance.instance_id, DeviceIndex=1)
    return trunk


def describe_type(ec2: Any, eni_id: str) -> str:
    return str(
        ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]["InterfaceType"]
    )


def test_interface_type_is_kept_and_described(cloud: Cloud) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    created = ec2.create_network_interface(
        SubnetId=cloud.subnet_ids[0], Groups=[cloud.security_group_id], InterfaceType="trunk"
    )
    assert created["NetworkInterface"]["InterfaceType"] == "trunk"
    branch, plain = new_eni(ec2, cloud, "branch"), new_eni(ec2, cloud)
    assert [describe_type(ec2, e) for e in (branch, plain)] == ["branch", "interface"]
    with pytest.raises(ClientError) as exc:
        new_eni(ec2, cloud, "sideways")
    assert error_code(exc) == "InvalidParameterValue"


def test_branch_cannot_attach_and_trunk_needs_a_trunking_type(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    with pytest.raises(ClientError) as exc:
        ec2.attach_network_interface(
            NetworkInterfaceId=new_eni(ec2, cloud, "branch"), InstanceId=instance.instance_id, DeviceIndex=1
        )
    assert error_code(exc) == "InvalidParameterValue"
    for instance_type, why in (("m4.large", "does not support trunk"), ("t3.medium", "branch table")):
        other = cloud.launch_instance(instance_type=instance_type)
        with pytest.raises(ClientError) as exc:
            ec2.attach_network_interface(
                NetworkInterfaceId=new_eni(ec2, cloud, "trunk"), InstanceId=other.instance_id, DeviceIndex=1
            )
        assert error_code(exc) == "InvalidParameterValue"
        assert why in str(exc.value)


def test_m5_large_trunk_takes_nine_branches_with_distinct_vlans(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    seen: list[object] = []
    cloud.subscribe(seen.append)
    trunk = attached_trunk(ec2, cloud, instance)
    branches = [new_eni(ec2, cloud, "branch") for _ in range(10)]
    for vlan, branch in enumerate(branches[:9], start=1):
        answer = ec2.associate_trunk_interface(BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=vlan)
        assert answer["InterfaceAssociation"]["VlanId"] == vlan
        assert answer["InterfaceAssociation"]["InterfaceProtocol"] == "VLAN"
    with pytest.raises(ClientError) as exc:
        ec2.associate_trunk_interface(BranchInterfaceId=branches[9], TrunkInterfaceId=trunk, VlanId=10)
    assert error_code(exc) == "BranchInterfaceLimitExceeded"
    described = ec2.describe_trunk_interface_associations(
        Filters=[{"Name": "trunk-interface-association.trunk-interface-id", "Values": [trunk]}]
    )["InterfaceAssociations"]
    assert sorted(a["VlanId"] for a in described) == list(range(1, 10))
    assert {a["BranchInterfaceId"] for a in described} == set(branches[:9])
    mac = ec2.describe_network_interfaces(NetworkInterfaceIds=[branches[0]])["NetworkInterfaces"][0][
        "MacAddress"
    ]
    assert BranchAssociated(branch_eni_id=branches[0], trunk_eni_id=trunk, vlan_id=1, mac=mac) in seen


def test_vlan_ids_are_unique_per_trunk_and_in_range(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    trunk = attached_trunk(ec2, cloud, instance)
    first, second = new_eni(ec2, cloud, "branch"), new_eni(ec2, cloud, "branch")
    ec2.associate_trunk_interface(BranchInterfaceId=first, TrunkInterfaceId=trunk, VlanId=7)
    for branch, vlan in ((second, 7), (second, 0), (second, 4095), (first, 8)):
        with pytest.raises(ClientError) as exc:
            ec2.associate_trunk_interface(BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=vlan)
        assert error_code(exc) == "InvalidParameterValue", (branch, vlan)
    with pytest.raises(ClientError) as exc:  # a plain ENI is no trunk
        ec2.associate_trunk_interface(
            BranchInterfaceId=second, TrunkInterfaceId=instance.primary_eni_id, VlanId=8
        )
    assert error_code(exc) == "InvalidParameterValue"
    unattached = new_eni(ec2, cloud, "trunk")
    with pytest.raises(ClientError) as exc:
        ec2.associate_trunk_interface(BranchInterfaceId=second, TrunkInterfaceId=unattached, VlanId=8)
    assert error_code(exc) == "IncorrectState"


def test_trunk_with_branches_stays_until_they_go(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    seen: list[object] = []
    cloud.subscribe(seen.append)
    trunk = attached_trunk(ec2, cloud, instance)
    kept, deleted = new_eni(ec2, cloud, "branch"), new_eni(ec2, cloud, "branch")
    association = ec2.associate_trunk_interface(BranchInterfaceId=kept, TrunkInterfaceId=trunk, VlanId=1)[
        "InterfaceAssociation"
    ]["AssociationId"]
    ec2.associate_trunk_interface(BranchInterfaceId=deleted, TrunkInterfaceId=trunk, VlanId=2)
    attachment = ec2.describe_network_interfaces(NetworkInterfaceIds=[trunk])["NetworkInterfaces"][0][
        "Attachment"
    ]["AttachmentId"]
    with pytest.raises(ClientError) as exc:
        ec2.detach_network_interface(AttachmentId=attachment)
    assert error_code(exc) == "InvalidNetworkInterface.InUse"
    # deleting a branch ends its association; disassociating ends the other
    ec2.delete_network_interface(NetworkInterfaceId=deleted)
    assert BranchDisassociated(branch_eni_id=deleted, trunk_eni_id=trunk) in seen
    ec2.disassociate_trunk_interface(AssociationId=association)
    assert ec2.describe_trunk_interface_associations()["InterfaceAssociations"] == []
    with pytest.raises(ClientError) as exc:
        ec2.disassociate_trunk_interface(AssociationId=association)
    assert error_code(exc) == "InvalidAssociationID.NotFound"
    ec2.detach_network_interface(AttachmentId=attachment)
    ec2.delete_network_interface(NetworkInterfaceId=trunk)
    ec2.delete_network_interface(NetworkInterfaceId=kept)


def test_terminating_the_instance_ends_its_trunk_associations(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    trunk = attached_trunk(ec2, cloud, instance)
    attachment = ec2.describe_network_interfaces(NetworkInterfaceIds=[trunk])["NetworkInterfaces"][0][
        "Attachment"
    ]["AttachmentId"]
    ec2.modify_network_interface_attribute(
        NetworkInterfaceId=trunk, Attachment={"AttachmentId": attachment, "DeleteOnTermination": True}
    )
    branch = new_eni(ec2, cloud, "branch")
    ec2.associate_trunk_interface(BranchInterfaceId=branch, TrunkInterfaceId=trunk, VlanId=3)
    ec2.terminate_instances(InstanceIds=[instance.instance_id])
    assert ec2.describe_trunk_interface_associations()["InterfaceAssociations"] == []
    assert (
        describe_type(ec2, branch) == "branch"
    )  # the branch itself stays, available, for its owner to delete
