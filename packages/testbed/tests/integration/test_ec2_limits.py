"""Instance-type ENI and IPv4 limits, attach/detach/delete semantics (boto3 against the testbed)."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from vpccni.testbed.cloud import Cloud, InstanceInfo
from vpccni.testbed.imds.server import ImdsServer

NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def new_eni(ec2: Any, cloud: Cloud, **kwargs: Any) -> str:
    resp = ec2.create_network_interface(
        SubnetId=cloud.subnet_ids[0], Groups=[cloud.security_group_id], **kwargs
    )
    return str(resp["NetworkInterface"]["NetworkInterfaceId"])


def test_m5_large_takes_three_enis_and_refuses_the_fourth(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    for index in (1, 2):
        ec2.attach_network_interface(
            NetworkInterfaceId=new_eni(ec2, cloud),
            InstanceId=instance.instance_id,
            DeviceIndex=index,
            NetworkCardIndex=0,
        )
    with pytest.raises(ClientError) as exc:
        ec2.attach_network_interface(
            NetworkInterfaceId=new_eni(ec2, cloud), InstanceId=instance.instance_id, DeviceIndex=3
        )
    assert error_code(exc) == "AttachmentLimitExceeded"
    described = ec2.describe_instances(InstanceIds=[instance.instance_id])["Reservations"][0]["Instances"][0]
    assert sorted(n["Attachment"]["DeviceIndex"] for n in described["NetworkInterfaces"]) == [0, 1, 2]


def test_m5_large_holds_ten_ipv4_per_eni(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    eni = new_eni(ec2, cloud)
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=instance.instance_id, DeviceIndex=1)
    resp = ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=9)
    assert len(resp["AssignedPrivateIpAddresses"]) == 9  # exactly what was asked, unlike bare moto
    with pytest.raises(ClientError) as exc:
        ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)
    assert error_code(exc) == "PrivateIpAddressLimitExceeded"
    # the primary ENI counts its primary address too
    with pytest.raises(ClientError) as exc:
        ec2.assign_private_ip_addresses(
            NetworkInterfaceId=instance.primary_eni_id, SecondaryPrivateIpAddressCount=10
        )
    assert error_code(exc) == "PrivateIpAddressLimitExceeded"
    primary, secondaries, prefixes, subnet = cloud.eni_addresses(eni)
    assert len(secondaries) == 9 and primary not in secondaries and prefixes == []
    assert subnet == cloud.subnet_ids[0]


def test_all_addresses_in_a_subnet_are_distinct(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client()
    enis = [new_eni(ec2, cloud, SecondaryPrivateIpAddressCount=8) for _ in range(3)]
    ips = [
        ip
        for eni in [*enis, instance.primary_eni_id]
        for ip in [cloud.eni_addresses(eni)[0], *cloud.eni_addresses(eni)[1]]
    ]
    assert len(ips) == len(set(ips)) == 28
    assert all(ip in instance.subnet_cidr for ip in ips)


def test_device_index_must_be_free(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    ec2.attach_network_interface(
        NetworkInterfaceId=new_eni(ec2, cloud), InstanceId=instance.instance_id, DeviceIndex=1
    )
    with pytest.raises(ClientError) as exc:
        ec2.attach_network_interface(
            NetworkInterfaceId=new_eni(ec2, cloud), InstanceId=instance.instance_id, DeviceIndex=1
        )
    assert error_code(exc) == "InvalidParameterValue"


def test_detach_then_delete_then_not_found(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    eni = new_eni(ec2, cloud, SecondaryPrivateIpAddressCount=2)
    attachment = ec2.attach_network_interface(
        NetworkInterfaceId=eni, InstanceId=instance.instance_id, DeviceIndex=1
    )["AttachmentId"]
    with pytest.raises(ClientError) as exc:
        ec2.delete_network_interface(NetworkInterfaceId=eni)
    assert error_code(exc) == "InvalidNetworkInterface.InUse"
    ec2.detach_network_interface(AttachmentId=attachment)
    assert (
        ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["Status"]
        == "available"
    )
    ec2.delete_network_interface(NetworkInterfaceId=eni)
    for call in (
        lambda: ec2.describe_network_interfaces(NetworkInterfaceIds=[eni]),
        lambda: ec2.delete_network_interface(NetworkInterfaceId=eni),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "InvalidNetworkInterfaceID.NotFound"


def test_primary_eni_cannot_be_detached(cloud: Cloud, instance: InstanceInfo) -> None:
    ec2 = cloud.ec2_client(config=NO_RETRY)
    eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[instance.primary_eni_id])["NetworkInterfaces"][
        0
    ]
    with pytest.raises(ClientError) as exc:
        ec2.detach_network_interface(AttachmentId=eni["Attachment"]["AttachmentId"])
    assert error_code(exc) == "OperationNotPermitted"


def test_events_describe_attach_detach_and_address_changes(cloud: Cloud, instance: InstanceInfo) -> None:
    from vpccni.testbed.events import AddressesChanged, EniAttached, EniDetached

    seen: list[object] = []
    cloud.subscribe(seen.append)
    ec2 = cloud.ec2_client()
    eni = new_eni(ec2, cloud)
    attachment = ec2.attach_network_interface(
        NetworkInterfaceId=eni, InstanceId=instance.instance_id, DeviceIndex=1
    )["AttachmentId"]
    ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)
    ec2.detach_network_interface(AttachmentId=attachment)
    mac = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["MacAddress"]
    assert (
        EniAttached(instance_id=instance.instance_id, eni_id=eni, mac=mac, device_index=1, network_card=0)
        in seen
    )
    assert AddressesChanged(eni_id=eni) in seen
    assert EniDetached(instance_id=instance.instance_id, eni_id=eni, mac=mac) in seen
    cloud.unsubscribe(seen.append)
    count = len(seen)
    ec2.delete_network_interface(NetworkInterfaceId=eni)
    assert len(seen) == count


def test_terminate_detaches_enis_and_deletes_those_marked(cloud: Cloud, instance: InstanceInfo) -> None:
    from vpccni.testbed.events import EniDetached

    seen: list[object] = []
    cloud.subscribe(seen.append)
    ec2 = cloud.ec2_client()
    kept, dropped = new_eni(ec2, cloud), new_eni(ec2, cloud)
    ec2.attach_network_interface(NetworkInterfaceId=kept, InstanceId=instance.instance_id, DeviceIndex=1)
    attachment = ec2.attach_network_interface(
        NetworkInterfaceId=dropped, InstanceId=instance.instance_id, DeviceIndex=2
    )["AttachmentId"]
    ec2.modify_network_interface_attribute(
        NetworkInterfaceId=dropped, Attachment={"AttachmentId": attachment, "DeleteOnTermination": True}
    )
    described = ec2.describe_network_interfaces(NetworkInterfaceIds=[dropped])["NetworkInterfaces"][0]
    assert described["Attachment"]["DeleteOnTermination"] is True
    ec2.terminate_instances(InstanceIds=[instance.instance_id])
    remaining = {
        n["NetworkInterfaceId"]: n["Status"] for n in ec2.describe_network_interfaces()["NetworkInterfaces"]
    }
    assert remaining == {kept: "available"}  # the primary ENI is DeleteOnTermination by default
    detached = {e.eni_id for e in seen if isinstance(e, EniDetached)}
    assert detached == {kept, dropped, instance.primary_eni_id}


def test_network_cards_have_their_own_eni_limits(cloud: Cloud) -> None:
    big = cloud.launch_instance(instance_type="c6in.32xlarge")  # two network cards, 8 ENIs each
    ec2 = cloud.ec2_client(config=NO_RETRY)
    eni = new_eni(ec2, cloud)
    ec2.attach_network_interface(
        NetworkInterfaceId=eni, InstanceId=big.instance_id, DeviceIndex=0, NetworkCardIndex=1
    )
    described = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    assert described["Attachment"]["NetworkCardIndex"] == 1
    assert described["Attachment"]["DeviceIndex"] == 0
    reservation = ec2.describe_instances(InstanceIds=[big.instance_id])["Reservations"][0]
    slots = {
        (n["Attachment"]["NetworkCardIndex"], n["Attachment"]["DeviceIndex"])
        for n in reservation["Instances"][0]["NetworkInterfaces"]
    }
    assert slots == {(0, 0), (1, 0)}  # the primary ENI keeps device 0 of card 0
    calls = len(cloud.call_log)
    assert [(a.network_card, a.device_index, a.eni_id) for a in cloud.instance_enis(big.instance_id)] == [
        (0, 0, big.primary_eni_id),
        (1, 0, eni),
    ]
    assert cloud.subnet_cidr(big.subnet_id) == big.subnet_cidr
    assert len(cloud.call_log) == calls  # read directly, not through the (throttled, logged) API
    with pytest.raises(ClientError) as exc:
        ec2.attach_network_interface(
            NetworkInterfaceId=new_eni(ec2, cloud),
            InstanceId=big.instance_id,
            DeviceIndex=1,
            NetworkCardIndex=7,
        )
    assert error_code(exc) == "InvalidParameterValue"


def test_each_network_card_holds_its_own_enis_and_imds_names_the_card(cloud: Cloud) -> None:
    """hpc7a.12xlarge: two cards of two ENIs each. A card full of ENIs refuses the next one as EC2 does,
    while the other card still takes its own; IMDS tells every MAC's card."""
    node = cloud.launch_instance(instance_type="hpc7a.12xlarge")
    ec2 = cloud.ec2_client(config=NO_RETRY)
    on_card_1 = [new_eni(ec2, cloud) for _ in range(3)]
    for device, eni in enumerate(on_card_1[:2]):
        ec2.attach_network_interface(
            NetworkInterfaceId=eni, InstanceId=node.instance_id, DeviceIndex=device, NetworkCardIndex=1
        )
    with pytest.raises(ClientError) as full:
        ec2.attach_network_interface(
            NetworkInterfaceId=on_card_1[2], InstanceId=node.instance_id, DeviceIndex=2, NetworkCardIndex=1
        )
    assert error_code(full) == "AttachmentLimitExceeded" and "2 on card 1" in str(full.value)
    ec2.attach_network_interface(
        NetworkInterfaceId=on_card_1[2], InstanceId=node.instance_id, DeviceIndex=1, NetworkCardIndex=0
    )
    imds = cloud.start_imds(node.instance_id)
    try:
        cards = {}
        for described in ec2.describe_network_interfaces(NetworkInterfaceIds=on_card_1)["NetworkInterfaces"]:
            mac = described["MacAddress"]
            url = f"{imds.endpoint}/latest/meta-data/network/interfaces/macs/{mac}/network-card"
            request = urllib.request.Request(url, headers={"X-aws-ec2-metadata-token": _imds_token(imds)})
            with urllib.request.urlopen(request, timeout=5) as reply:
                cards[described["NetworkInterfaceId"]] = reply.read().decode()
        assert cards == {on_card_1[0]: "1", on_card_1[1]: "1", on_card_1[2]: "0"}
    finally:
        imds.stop()


def _imds_token(imds: ImdsServer) -> str:
    request = urllib.request.Request(
        f"{imds.endpoint}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        return str(reply.read().decode())
