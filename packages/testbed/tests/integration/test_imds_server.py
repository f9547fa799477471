"""IMDSv2 served from the live EC2 state: token flow, paths, 404s, propagation lag, outage."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest
from vpccni.testbed.cloud import Cloud, InstanceInfo
from vpccni.testbed.imds.gateway import ImdsGateway
from vpccni.testbed.imds.server import ImdsServer, Outage


def token(endpoint: str, ttl: int = 60) -> str:
    req = urllib.request.Request(
        endpoint + "/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def get(endpoint: str, path: str, tok: str | None) -> str:
    headers = {"X-aws-ec2-metadata-token": tok} if tok else {}
    req = urllib.request.Request(endpoint + "/latest/meta-data/" + path, headers=headers)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def status_of(endpoint: str, path: str, tok: str | None) -> int:
    try:
        get(endpoint, path, tok)
        return 200
    except urllib.error.HTTPError as err:
        return err.code


def test_token_flow(imds: ImdsServer) -> None:
    assert status_of(imds.endpoint, "instance-id", None) == 401
    assert status_of(imds.endpoint, "instance-id", "forged") == 401
    with pytest.raises(urllib.error.HTTPError) as bad:
        token(imds.endpoint, ttl=0)
    assert bad.value.code == 400
    short = token(imds.endpoint, ttl=1)
    assert status_of(imds.endpoint, "instance-id", short) == 200
    time.sleep(1.1)
    assert status_of(imds.endpoint, "instance-id", short) == 401


def test_metadata_paths_follow_ec2_state(cloud: Cloud, instance: InstanceInfo, imds: ImdsServer) -> None:
    tok = token(imds.endpoint)
    ep = imds.endpoint
    assert get(ep, "instance-id", tok) == instance.instance_id
    assert get(ep, "instance-type", tok) == "m5.large"
    assert get(ep, "placement/availability-zone", tok) == instance.availability_zone
    assert get(ep, "placement/region", tok) == cloud.region
    assert get(ep, "local-ipv4", tok) == str(instance.primary_ip)
    assert get(ep, "mac", tok) == instance.primary_mac
    assert get(ep, "network/interfaces/macs/", tok) == instance.primary_mac + "/"
    base = f"network/interfaces/macs/{instance.primary_mac}/"
    listing = get(ep, base, tok).split("\n")
    for field in (
        "interface-id",
        "device-number",
        "network-card",
        "subnet-id",
        "vpc-id",
        "security-group-ids",
        "local-ipv4s",
        "subnet-ipv4-cidr-block",
        "vpc-ipv4-cidr-blocks",
    ):
        assert field in listing
    assert get(ep, base + "interface-id", tok) == instance.primary_eni_id
    assert get(ep, base + "device-number", tok) == "0"
    assert get(ep, base + "subnet-ipv4-cidr-block", tok) == str(instance.subnet_cidr)
    assert get(ep, base + "vpc-ipv4-cidr-blocks", tok) == "10.0.0.0/16"
    assert get(ep, base + "security-group-ids", tok) == cloud.security_group_id
    assert status_of(ep, base + "ipv4-prefix", tok) == 404  # no prefixes: 404 as EC2
    assert status_of(ep, "no-such-thing", tok) == 404

    ec2 = cloud.ec2_client()
    eni = ec2.create_network_interface(
        SubnetId=cloud.subnet_ids[1], Groups=[cloud.security_group_id], SecondaryPrivateIpAddressCount=2
    )["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=instance.instance_id, DeviceIndex=1
    )
    prefixes = ec2.assign_private_ip_addresses(NetworkInterfaceId=instance.primary_eni_id, Ipv4PrefixCount=1)[
        "AssignedIpv4Prefixes"
    ]
    macs = get(ep, "network/interfaces/macs/", tok).split("\n")
    assert sorted(macs) == sorted([instance.primary_mac + "/", eni["MacAddress"] + "/"])
    second = f"network/interfaces/macs/{eni['MacAddress']}/"
    assert get(ep, second + "device-number", tok) == "1"
    assert get(ep, second + "subnet-id", tok) == cloud.subnet_ids[1]
    ips = get(ep, second + "local-ipv4s", tok).split("\n")
    assert ips[0] == eni["PrivateIpAddress"] and len(ips) == 3
    assert get(ep, base + "ipv4-prefix", tok) == prefixes[0]["Ipv4Prefix"]


def test_propagation_lag_shows_older_state(cloud: Cloud, instance: InstanceInfo, imds: ImdsServer) -> None:
    tok = token(imds.endpoint)
    path = f"network/interfaces/macs/{instance.primary_mac}/local-ipv4s"
    cloud.set_imds_lag(1.0)
    cloud.ec2_client().assign_private_ip_addresses(
        NetworkInterfaceId=instance.primary_eni_id, SecondaryPrivateIpAddressCount=2
    )
    assert get(imds.endpoint, path, tok) == str(instance.primary_ip)  # EC2 changed, IMDS not yet
    time.sleep(1.1)
    assert len(get(imds.endpoint, path, tok).split("\n")) == 3
    cloud.set_imds_lag(0)


def test_outage_refuses_connections_then_recovers(cloud: Cloud, imds: ImdsServer) -> None:
    tok = token(imds.endpoint)
    cloud.set_imds_outage(True)
    with pytest.raises(urllib.error.URLError) as err:
        get(imds.endpoint, "instance-id", tok)
    assert isinstance(err.value.reason, ConnectionRefusedError)
    cloud.set_imds_outage(False)
    assert get(imds.endpoint, "instance-id", tok).startswith("i-")
    cloud.set_imds_outage(True, Outage.HTTP_503)
    assert status_of(imds.endpoint, "instance-id", tok) == 503
    cloud.set_imds_outage(False)
    assert status_of(imds.endpoint, "instance-id", tok) == 200


def test_serves_on_a_socket_it_is_given(cloud: Cloud, instance: InstanceInfo) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = cloud.start_imds(instance.instance_id, sock=sock)
    try:
        assert server.endpoint == f"http://127.0.0.1:{sock.getsockname()[1]}"
        assert cloud.imds_endpoint(instance.instance_id) == server.endpoint
        tok = token(server.endpoint)
        assert get(server.endpoint, "instance-id", tok) == instance.instance_id
        cloud.set_imds_outage(True)  # a borrowed socket cannot be unbound: connections are dropped
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            get(server.endpoint, "instance-id", tok)
        cloud.set_imds_outage(False)
        assert get(server.endpoint, "instance-id", tok) == instance.instance_id
    finally:
        server.stop()


def test_a_gateway_serves_many_instances_each_under_its_id(cloud: Cloud, instance: InstanceInfo) -> None:
    other = cloud.launch_instance("m5.large")
    gateway = ImdsGateway()
    gateway.start()
    try:
        first = cloud.serve_imds(gateway, instance.instance_id)
        second = cloud.serve_imds(gateway, other.instance_id)
        assert get(first, "instance-id", token(first)) == instance.instance_id
        assert get(second, "instance-id", token(second)) == other.instance_id
        assert get(second, "local-ipv4", token(second)) == str(other.primary_ip)
        assert status_of(first, "instance-id", None) == 401  # IMDSv2 behind the prefix too
        unknown = first.rsplit("/", 1)[0] + "/i-0unknown"
        assert status_of(unknown, "instance-id", "x") == 404
    finally:
        gateway.stop()


def test_lagging_imds_of_one_instance_is_not_rebuilt_for_calls_about_another(
    cloud: Cloud, instance: InstanceInfo
) -> None:
    other = cloud.launch_instance("m5.large")
    cloud.set_imds_lag(30.0)  # what IMDS shows now is a snapshot taken when EC2 changed
    history = cloud._history
    before = len(history._snaps[instance.instance_id])
    cloud.ec2_client().assign_private_ip_addresses(
        NetworkInterfaceId=other.primary_eni_id, SecondaryPrivateIpAddressCount=1
    )
    assert len(history._snaps[instance.instance_id]) == before
    assert len(history._snaps[other.instance_id]) >= 2
    cloud.set_imds_lag(0)
