"""Subnet discovery for new ENIs (``ENABLE_SUBNET_DISCOVERY``, docs/design/upstream-contract.md §5)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from vpccni.awsutils.ec2api import EC2Api
from vpccni.awsutils.errors import Ec2Error
from vpccni.awsutils.models import Subnet
from vpccni.awsutils.tags import tags_dict

log = logging.getLogger(__name__)

TAG_CNI_ROLE = "kubernetes.io/role/cni"
CLUSTER_TAG_PREFIX = "cni.networking.k8s.aws/cluster/"


def subnet_from_ec2(raw: dict[str, Any]) -> Subnet:
    return Subnet(
        subnet_id=str(raw["SubnetId"]),
        vpc_id=str(raw.get("VpcId", "")),
        availability_zone=str(raw.get("AvailabilityZone", "")),
        cidr=ipaddress.IPv4Network(raw["CidrBlock"]),
        available_ips=int(raw.get("AvailableIpAddressCount", 0)),
        tags=tags_dict(raw.get("Tags")),
    )


def _cluster_allows(subnet: Subnet, cluster_name: str) -> bool:
    clusters = [k[len(CLUSTER_TAG_PREFIX) :] for k in subnet.tags if k.startswith(CLUSTER_TAG_PREFIX)]
    return not clusters or cluster_name in clusters


def subnet_qualifies(subnet: Subnet, *, primary_subnet_id: str, cluster_name: str) -> bool:
    """Upstream's rules for which subnets may hold a new ENI.

    The primary subnet qualifies unless tagged ``kubernetes.io/role/cni=0``. Others need that tag present and
    not ``0`` and, if they carry ``cni.networking.k8s.aws/cluster/<x>`` tags, one ``<x>`` equal to
    CLUSTER_NAME (the cluster rule applies to secondary subnets only: the node itself lives in the primary).
    """
    role = subnet.tags.get(TAG_CNI_ROLE)
    if subnet.subnet_id == primary_subnet_id:
        return role != "0"
    return role is not None and role != "0" and _cluster_allows(subnet, cluster_name)


def rank_subnets(subnets: Sequence[Subnet], *, primary_subnet_id: str, cluster_name: str) -> list[Subnet]:
    """Qualifying subnets, most free IPs first (ties by id, so the order is stable)."""
    ok = [
        s
        for s in subnets
        if subnet_qualifies(s, primary_subnet_id=primary_subnet_id, cluster_name=cluster_name)
    ]
    return sorted(ok, key=lambda s: (-s.available_ips, s.subnet_id))


def excluded_subnet_ids(subnets: Sequence[Subnet]) -> set[str]:
    """Subnets tagged ``kubernetes.io/role/cni=0``: ENIs there get no pod IPs."""
    return {s.subnet_id for s in subnets if s.tags.get(TAG_CNI_ROLE) == "0"}


def discover_subnets(
    ec2: EC2Api, *, vpc_id: str, availability_zone: str, primary_subnet_id: str, cluster_name: str
) -> list[str]:
    """Subnet ids to try for a new ENI, in order; the primary subnet alone if DescribeSubnets fails."""
    try:
        raw = ec2.describe_subnets(
            filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "availability-zone", "Values": [availability_zone]},
            ]
        )
    except Ec2Error as exc:
        log.warning("subnet discovery failed, using the primary subnet %s: %s", primary_subnet_id, exc)
        return [primary_subnet_id]
    ranked = rank_subnets(
        [subnet_from_ec2(r) for r in raw], primary_subnet_id=primary_subnet_id, cluster_name=cluster_name
    )
    return [s.subnet_id for s in ranked]
