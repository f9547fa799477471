from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from vpccni.awsutils.models import Subnet
from vpccni.awsutils.subnets import discover_subnets, excluded_subnet_ids, rank_subnets, subnet_qualifies
from vpccni.awsutils.tags import (
    TAG_INSTANCE_ID,
    TAG_NO_MANAGE,
    TagSettings,
    eni_is_managed,
    parse_rfc3339,
    rfc3339,
    tags_to_set,
)
from vpccni.awsutils.testing import FakeEC2


def test_managed_tags_leave_out_reserved_keys() -> None:
    s = TagSettings(
        cluster_name="c1",
        additional_tags={"team": "a", "node.k8s.amazonaws.com/instance_id": "x", "x.k8s.amazonaws.com": "y"},
    )
    assert s.managed_tags("i-1") == {
        "team": "a",
        "node.k8s.amazonaws.com/instance_id": "i-1",
        "cluster.k8s.amazonaws.com/name": "c1",
        "eks:eni:owner": "amazon-vpc-cni",
    }
    assert TagSettings().managed_tags("i-1") == {"node.k8s.amazonaws.com/instance_id": "i-1"}


def test_rfc3339_round_trip_and_diff() -> None:
    when = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    assert rfc3339(when) == "2026-05-06T07:08:09Z"
    assert parse_rfc3339("2026-05-06T07:08:09Z") == when
    assert parse_rfc3339("yesterday") is None
    assert tags_to_set({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == {"b": "3", "c": "4"}


def _subnet(sid: str, free: int, tags: dict[str, str] | None = None) -> Subnet:
    return Subnet(
        subnet_id=sid,
        vpc_id="vpc-1",
        availability_zone="az",
        cidr=ipaddress.IPv4Network("10.0.0.0/24"),
        available_ips=free,
        tags=tags or {},
    )


def test_subnet_rules() -> None:
    role = "kubernetes.io/role/cni"
    assert subnet_qualifies(_subnet("p", 1), primary_subnet_id="p", cluster_name="")
    assert not subnet_qualifies(_subnet("p", 1, {role: "0"}), primary_subnet_id="p", cluster_name="")
    assert not subnet_qualifies(_subnet("s", 1), primary_subnet_id="p", cluster_name="")
    assert subnet_qualifies(_subnet("s", 1, {role: "1"}), primary_subnet_id="p", cluster_name="")
    assert subnet_qualifies(_subnet("s", 1, {role: ""}), primary_subnet_id="p", cluster_name="")
    assert not subnet_qualifies(_subnet("s", 1, {role: "0"}), primary_subnet_id="p", cluster_name="")
    other = {role: "1", "cni.networking.k8s.aws/cluster/other": "1"}
    assert not subnet_qualifies(_subnet("s", 1, other), primary_subnet_id="p", cluster_name="mine")
    both = other | {"cni.networking.k8s.aws/cluster/mine": "1"}
    assert subnet_qualifies(_subnet("s", 1, both), primary_subnet_id="p", cluster_name="mine")
    assert excluded_subnet_ids([_subnet("a", 1, {role: "0"}), _subnet("b", 1)]) == {"a"}


def test_rank_most_free_first() -> None:
    role = {"kubernetes.io/role/cni": "1"}
    ranked = rank_subnets(
        [_subnet("p", 10), _subnet("a", 50, role), _subnet("b", 5, role), _subnet("c", 99)],
        primary_subnet_id="p",
        cluster_name="",
    )
    assert [s.subnet_id for s in ranked] == ["a", "p", "b"]


def test_discovery_uses_ec2_and_falls_back_to_primary() -> None:
    ec2 = FakeEC2()
    primary = ec2.add_subnet("10.0.0.0/24")
    tagged = ec2.add_subnet("10.0.8.0/21", tags={"kubernetes.io/role/cni": "1"})
    ec2.add_subnet("10.0.16.0/20")  # untagged: never used
    kw = {
        "vpc_id": ec2.vpc_id,
        "availability_zone": ec2.availability_zone,
        "primary_subnet_id": primary,
        "cluster_name": "",
    }
    assert discover_subnets(ec2, **kw) == [tagged, primary]
    filters = ec2.calls[-1][1]["Filters"]
    assert {f["Name"] for f in filters} == {"vpc-id", "availability-zone"}
    ec2.fail_next("DescribeSubnets", "UnauthorizedOperation")
    assert discover_subnets(ec2, **kw) == [primary]


@pytest.mark.parametrize(
    ("tags", "manage_untagged", "managed"),
    [
        ({TAG_NO_MANAGE: "true"}, True, False),
        ({TAG_NO_MANAGE: "true", TAG_INSTANCE_ID: "i-1"}, True, False),
        ({TAG_NO_MANAGE: "True"}, False, True),  # not exactly "true": managed, as upstream compares strings
        (
            {TAG_NO_MANAGE: "false"},
            False,
            True,
        ),  # a no_manage tag decides alone, even without MANAGE_UNTAGGED_ENI
        ({TAG_INSTANCE_ID: "i-1"}, False, True),
        ({TAG_INSTANCE_ID: "i-other"}, True, True),  # attached here now: ours, re-tagged
        ({TAG_INSTANCE_ID: "i-other"}, False, False),
        ({}, True, True),
        ({}, False, False),
    ],
)
def test_eni_ownership_rule_is_upstreams(tags: dict[str, str], manage_untagged: bool, managed: bool) -> None:
    assert (
        eni_is_managed(tags, instance_id="i-1", is_primary=False, manage_untagged=manage_untagged) is managed
    )
    assert eni_is_managed(tags, instance_id="i-1", is_primary=True, manage_untagged=manage_untagged)
