"""Prefix delegation and subnet free-address accounting (boto3 against the testbed)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from vpccni.testbed.cloud import Cloud, CloudConfig, InstanceInfo, SubnetSpec

NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture
def cloud_config() -> CloudConfig:
    # A second, tiny subnet (/26 = four /28 blocks, 59 usable addresses) to exhaust and fragment.
    return CloudConfig(
        subnets=(SubnetSpec(cidr=IPv4Network("10.0.0.0/20")), SubnetSpec(cidr=IPv4Network("10.0.16.0/26")))
    )


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def attached_eni(ec2: Any, cloud: Cloud, instance: InstanceInfo, **kwargs: Any) -> str:
    eni = ec2.create_network_interface(SubnetId=cloud.subnet_ids[0], **kwargs)["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=instance.instance_id, DeviceIndex=1
    )
    return str(eni["NetworkInterfaceId"])


def test_prefixes_are_aligned_disjoint_and_visible_in_describe(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    created = ec2.create_network_interface(SubnetId=cloud.subnet_ids[0], Ipv4PrefixCount=1)[
        "NetworkInterface"
    ]
    eni = created["NetworkInterfaceId"]
    assert len(created["Ipv4Prefixes"]) == 1
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=instance.instance_id, DeviceIndex=1)
    ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=2)
    assigned = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4PrefixCount=2)[
        "AssignedIpv4Prefixes"
    ]
    assert len(assigned) == 2
    described = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    prefixes = [IPv4Network(p["Ipv4Prefix"]) for p in described["Ipv4Prefixes"]]
    assert len(prefixes) == 3 and all(p.prefixlen == 28 for p in prefixes)
    assert all(not a.overlaps(b) for i, a in enumerate(prefixes) for b in prefixes[i + 1 :])
    ips = [IPv4Address(a["PrivateIpAddress"]) for a in described["PrivateIpAddresses"]]
    all_ips = [
        IPv4Address(a["PrivateIpAddress"])
        for n in ec2.describe_network_interfaces()["NetworkInterfaces"]
        for a in n["PrivateIpAddresses"]
    ]
    assert not any(ip in p for ip in all_ips for p in prefixes)
    assert cloud.eni_addresses(eni)[2] == prefixes
    # the limit counts each prefix as one slot: 1 primary + 2 IPs + 3 prefixes = 6 of 10
    with pytest.raises(ClientError) as exc:
        ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4PrefixCount=5)
    assert code(exc) == "PrivateIpAddressLimitExceeded"
    ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4Prefixes=[str(prefixes[0])])
    ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=[str(ips[1])])
    after = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    assert [IPv4Network(p["Ipv4Prefix"]) for p in after["Ipv4Prefixes"]] == prefixes[1:]
    assert len(after["PrivateIpAddresses"]) == 2


def test_prefix_delegation_refused_on_xen(cloud: Cloud) -> None:
    xen = cloud.launch_instance(instance_type="m4.large")
    ec2 = cloud.ec2_client(config=NO_RETRY)
    eni = attached_eni(ec2, cloud, xen)
    with pytest.raises(ClientError) as exc:
        ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, Ipv4PrefixCount=1)
    assert code(exc) == "InvalidParameterValue"


def test_fragmented_subnet_returns_insufficient_cidr_blocks(cloud: Cloud) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    small = cloud.subnet_ids[1]
    # one address in each of the two /28 blocks that hold no reserved address
    ec2.create_network_interface(SubnetId=small, PrivateIpAddress="10.0.16.20")
    ec2.create_network_interface(SubnetId=small, PrivateIpAddress="10.0.16.40")
    subnet = ec2.describe_subnets(SubnetIds=[small])["Subnets"][0]
    assert subnet["AvailableIpAddressCount"] == 64 - 5 - 2
    with pytest.raises(ClientError) as exc:
        ec2.create_network_interface(SubnetId=small, Ipv4PrefixCount=1)
    assert code(exc) == "InsufficientCidrBlocks"


def test_subnet_exhaustion_and_available_count(cloud: Cloud) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    small = cloud.subnet_ids[1]
    eni = ec2.create_network_interface(SubnetId=small, Ipv4PrefixCount=1)["NetworkInterface"][
        "NetworkInterfaceId"
    ]
    assert ec2.describe_subnets(SubnetIds=[small])["Subnets"][0]["AvailableIpAddressCount"] == 59 - 1 - 16
    ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=40)
    assert ec2.describe_subnets(SubnetIds=[small])["Subnets"][0]["AvailableIpAddressCount"] == 2
    with pytest.raises(ClientError) as exc:
        ec2.create_network_interface(SubnetId=small, SecondaryPrivateIpAddressCount=2)
    assert code(exc) == "InsufficientFreeAddressesInSubnet"
    ec2.delete_network_interface(NetworkInterfaceId=eni)
    assert ec2.describe_subnets(SubnetIds=[small])["Subnets"][0]["AvailableIpAddressCount"] == 59
