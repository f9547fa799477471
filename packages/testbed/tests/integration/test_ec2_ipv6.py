"""A dual-stack VPC in the testbed: IPv6 /80 prefixes through boto3, their limits, and IMDS's IPv6 keys."""

from __future__ import annotations

import urllib.request
from ipaddress import IPv4Network, IPv6Address, IPv6Network

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from vpccni.testbed.cloud import DEFAULT_VPC_IPV6_CIDR, Cloud, CloudConfig, InstanceInfo
from vpccni.testbed.ec2.security import SgRule
from vpccni.testbed.imds.server import ImdsServer

NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture
def cloud_config() -> CloudConfig:
    return CloudConfig(vpc_ipv6_cidr=DEFAULT_VPC_IPV6_CIDR)


def imds_get(server: ImdsServer, path: str) -> str:
    put = urllib.request.Request(
        server.endpoint + "/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    with urllib.request.urlopen(put, timeout=5) as resp:
        token = resp.read().decode()
    req = urllib.request.Request(
        server.endpoint + "/latest/meta-data/" + path, headers={"X-aws-ec2-metadata-token": token}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def test_subnets_get_slash_64s_of_the_vpc_slash_56_and_nodes_an_ipv6_address(
    cloud: Cloud, instance: InstanceInfo
) -> None:
    first, second = (cloud.subnet_ipv6_cidr(s) for s in cloud.subnet_ids)
    assert first == IPv6Network("2001:db8:0:100::/64") and second == IPv6Network("2001:db8:0:101::/64")
    assert instance.primary_ipv6 == IPv6Address("2001:db8:0:100::4")  # after the four reserved ones
    ec2 = cloud.ec2_client(config=NO_RETRY)
    vpc = ec2.describe_vpcs(VpcIds=[cloud.vpc_id])["Vpcs"][0]
    assert [a["Ipv6CidrBlock"] for a in vpc["Ipv6CidrBlockAssociationSet"]] == [str(DEFAULT_VPC_IPV6_CIDR)]


def test_an_ipv6_prefix_on_the_primary_eni_is_described_and_in_imds(
    cloud: Cloud, instance: InstanceInfo, imds: ImdsServer
) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    eni = instance.primary_eni_id
    assigned = ec2.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6PrefixCount=1)["AssignedIpv6Prefixes"]
    prefix = IPv6Network(assigned[0])
    assert prefix.prefixlen == 80 and prefix.subnet_of(IPv6Network("2001:db8:0:100::/64"))
    assert instance.primary_ipv6 not in prefix
    described = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    assert [p["Ipv6Prefix"] for p in described["Ipv6Prefixes"]] == [str(prefix)]
    assert [a["Ipv6Address"] for a in described["Ipv6Addresses"]] == [str(instance.primary_ipv6)]
    assert cloud.eni_ipv6(eni) == ([instance.primary_ipv6], [prefix])
    mac = imds_get(imds, "mac")
    base = f"network/interfaces/macs/{mac}/"
    assert imds_get(imds, "ipv6") == str(instance.primary_ipv6)
    assert imds_get(imds, base + "ipv6s") == str(instance.primary_ipv6)
    assert imds_get(imds, base + "ipv6-prefix") == str(prefix)
    assert imds_get(imds, base + "subnet-ipv6-cidr-blocks") == "2001:db8:0:100::/64"
    assert imds_get(imds, base + "vpc-ipv6-cidr-blocks") == str(DEFAULT_VPC_IPV6_CIDR)
    ec2.unassign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6Prefixes=[str(prefix)])
    assert cloud.eni_ipv6(eni) == ([instance.primary_ipv6], [])
    # A named /80 (Ipv6Prefixes): taken as asked when free, refused when not a free /80 of the subnet.
    wanted = IPv6Network("2001:db8:0:100:abcd::/80")
    assert ec2.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6Prefixes=[str(wanted)])[
        "AssignedIpv6Prefixes"
    ] == [str(wanted)]
    with pytest.raises(ClientError) as exc:
        ec2.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6Prefixes=[str(wanted)])
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_ipv6_prefixes_need_nitro_and_respect_the_per_interface_limit(cloud: Cloud) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    xen = cloud.launch_instance(instance_type="m4.large")
    with pytest.raises(ClientError) as exc:
        ec2.assign_ipv6_addresses(NetworkInterfaceId=xen.primary_eni_id, Ipv6PrefixCount=1)
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"
    small = cloud.launch_instance(instance_type="t3.nano")  # 2 IPv6 per interface, one is the node's
    ec2.assign_ipv6_addresses(NetworkInterfaceId=small.primary_eni_id, Ipv6PrefixCount=1)
    with pytest.raises(ClientError) as exc:
        ec2.assign_ipv6_addresses(NetworkInterfaceId=small.primary_eni_id, Ipv6PrefixCount=1)
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_an_ipv4_only_subnet_refuses_ipv6() -> None:
    with Cloud(CloudConfig()) as cloud:
        node = cloud.launch_instance()
        assert node.primary_ipv6 is None
        with pytest.raises(ClientError) as exc:
            cloud.ec2_client(config=NO_RETRY).assign_ipv6_addresses(
                NetworkInterfaceId=node.primary_eni_id, Ipv6PrefixCount=1
            )
        assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_a_new_eni_in_a_dual_stack_subnet_gets_free_ipv6_addresses_as_asked_or_assigned_on_creation(
    cloud: Cloud, instance: InstanceInfo
) -> None:
    """The subnets assign IPv6 on creation (as EKS asks of IPv6 clusters' subnets): an ENI made without asking
    (the VPC resource controller's branch ENIs) gets one; `Ipv6AddressCount` gets that many; all free ones of
    the subnet's /64, never the node's."""
    ec2 = cloud.ec2_client(config=NO_RETRY)
    subnet_id = cloud.subnet_ids[0]
    (subnet,) = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    assert subnet["AssignIpv6AddressOnCreation"] is True
    branch = ec2.create_network_interface(SubnetId=subnet_id, InterfaceType="branch")["NetworkInterface"]
    two = ec2.create_network_interface(SubnetId=subnet_id, Ipv6AddressCount=2)["NetworkInterface"]
    found = [IPv6Address(a["Ipv6Address"]) for e in (branch, two) for a in e["Ipv6Addresses"]]
    assert len(found) == 3 and len(set(found)) == 3 and instance.primary_ipv6 not in found
    block = cloud.subnet_ipv6_cidr(subnet_id)
    assert block is not None and all(ip in block for ip in found)
    described = ec2.describe_network_interfaces(NetworkInterfaceIds=[branch["NetworkInterfaceId"]])
    assert described["NetworkInterfaces"][0]["Ipv6Addresses"] == branch["Ipv6Addresses"]


def test_an_ipv4_only_subnet_gives_a_new_eni_no_ipv6() -> None:
    with Cloud(CloudConfig()) as cloud:
        eni = cloud.ec2_client(config=NO_RETRY).create_network_interface(SubnetId=cloud.subnet_ids[0])
        assert not eni["NetworkInterface"].get("Ipv6Addresses")


def test_security_groups_carry_ipv6_rules_and_members_to_the_datapath(
    cloud: Cloud, instance: InstanceInfo
) -> None:
    """What the VPC datapath enforces, read from moto as EC2 describes it: Ipv6Ranges rules, ICMPv6 as "58",
    the ::/0 egress every new group gets in a VPC with an IPv6 block, and a group's IPv6 members (addresses
    and /80 prefixes of its ENIs)."""
    ec2 = cloud.ec2_client(config=NO_RETRY)
    group = ec2.create_security_group(GroupName="v6", Description="v6", VpcId=cloud.vpc_id)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "58", "FromPort": 128, "ToPort": -1,
             "Ipv6Ranges": [{"CidrIpv6": "2001:db8:0:1ff::/64"}]},
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
             "UserIdGroupPairs": [{"GroupId": cloud.security_group_id}]},
        ],
    )  # fmt: skip
    described = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    assert [r["CidrIpv6"] for p in described["IpPermissionsEgress"] for r in p.get("Ipv6Ranges", [])] == [
        "::/0"
    ]
    prefix = IPv6Network(
        ec2.assign_ipv6_addresses(NetworkInterfaceId=instance.primary_eni_id, Ipv6PrefixCount=1)[
            "AssignedIpv6Prefixes"
        ][0]
    )
    state = cloud.security_state()
    rules = state.groups[group]
    assert set(rules.ingress) == {
        SgRule(protocol="icmpv6", from_port=128, to_port=-1, cidr=IPv6Network("2001:db8:0:1ff::/64")),
        SgRule(protocol="tcp", from_port=80, to_port=80, group_id=cloud.security_group_id),
    }
    assert set(rules.egress) == {
        SgRule(protocol="-1", cidr=IPv4Network("0.0.0.0/0")),
        SgRule(protocol="-1", cidr=IPv6Network("::/0")),
    }
    # The node group admits the whole VPC in both families.
    assert SgRule(protocol="-1", cidr=DEFAULT_VPC_IPV6_CIDR) in state.groups[cloud.security_group_id].ingress
    assert set(state.members(cloud.security_group_id, version=6)) == {
        IPv6Network(instance.primary_ipv6),
        prefix,
    }
    assert state.members(cloud.security_group_id) == (IPv4Network(instance.primary_ip),)
