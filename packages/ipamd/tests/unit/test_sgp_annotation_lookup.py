"""Security groups for pods: the `vpc.amazonaws.com/pod-eni` annotation, and telling branch-ENI pods apart
from the pods ipamd watches (waiting a bounded time for what is not there yet)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from vpccni.ipamd.sgp.annotation import BranchEni, PodEniAnnotationError, parse_pod_eni
from vpccni.ipamd.sgp.lookup import BranchLookupError, BranchPodLookup
from vpccni.k8sapi import PodCache, PodInfo

ANNOTATION = "vpc.amazonaws.com/pod-eni"
# What the VPC resource controller writes (its ENIDetails, with vlanId spelt as it spells it).
WRITTEN = [
    {
        "eniId": "eni-0a1b2c3d4e5f60718",
        "ifAddress": "0A:1B:2C:3D:4E:5F",
        "privateIp": "10.0.16.40",
        "ipv6Addr": "",
        "vlanId": 7,
        "subnetCidr": "10.0.16.0/20",
        "subnetV6Cidr": "",
    }
]
BRANCH = BranchEni(
    eni_id="eni-0a1b2c3d4e5f60718",
    mac="0a:1b:2c:3d:4e:5f",
    ip=IPv4Address("10.0.16.40"),
    vlan_id=7,
    subnet=IPv4Network("10.0.16.0/20"),
)


def test_parses_what_the_controller_writes() -> None:
    branch = parse_pod_eni(json.dumps(WRITTEN))
    assert branch == BRANCH and branch.gateway == IPv4Address("10.0.16.1")
    # Go's decoder matches keys case-insensitively: upstream's reader spells it vlanID.
    assert parse_pod_eni(json.dumps([{**WRITTEN[0], "vlanID": 7}])) == BRANCH


@pytest.mark.parametrize(
    "value,problem",
    [
        ("{", "is not JSON"),
        ("[]", "non-empty JSON list"),
        ('{"eniId": "eni-1"}', "non-empty JSON list"),
        (json.dumps([{**WRITTEN[0], "eniId": ""}]), "no branch ENI id"),
        (json.dumps([{**WRITTEN[0], "ifAddress": "0a:1b"}]), "no usable MAC"),
        (json.dumps([{**WRITTEN[0], "vlanId": 0}]), "no VLAN id in 1-4094"),
        (json.dumps([{**WRITTEN[0], "vlanId": "7"}]), "no VLAN id"),
        (json.dumps([{**WRITTEN[0], "privateIp": "10.0.300.1"}]), "10.0.300.1"),
        (json.dumps([{**WRITTEN[0], "privateIp": "10.1.0.5"}]), "not in subnetCidr 10.0.16.0/20"),
    ],
)
def test_refuses_anything_else_naming_the_problem(value: str, problem: str) -> None:
    with pytest.raises(PodEniAnnotationError, match=problem):
        parse_pod_eni(value)


# A branch ENI in a dual-stack subnet, as the controller writes it for an IPv6 cluster.
WRITTEN_V6 = [
    {
        **WRITTEN[0],
        "ipv6Addr": "2600:1f14:a:b100::1c",
        "subnetV6Cidr": "2600:1f14:a:b100::/64",
        "associationID": "trunk-assoc-0123456789abcdef0",
    }
]
BRANCH_V6 = replace(
    BRANCH, ip=IPv6Address("2600:1f14:a:b100::1c"), subnet=IPv6Network("2600:1f14:a:b100::/64")
)


def test_an_ipv6_node_takes_the_branch_enis_ipv6_address_and_ec2s_link_local_router() -> None:
    branch = parse_pod_eni(json.dumps(WRITTEN_V6), ipv6=True)
    assert branch == BRANCH_V6
    assert branch.gateway == IPv6Address("fe80:ec2::1")  # upstream's GetIPv6Gateway
    # The same annotation read by an IPv4 node gives the IPv4 side.
    assert parse_pod_eni(json.dumps(WRITTEN_V6)) == BRANCH


@pytest.mark.parametrize(
    "fields,problem",
    [
        ({"ipv6Addr": ""}, "no ipv6Addr: this node runs IPv6.*dual-stack subnet"),
        ({"ipv6Addr": "10.0.16.40"}, "ipv6Addr 10.0.16.40 is not IPv6"),
        ({"ipv6Addr": "2600:1f14:a:b100::zz"}, "2600:1f14:a:b100::zz"),
        ({"subnetV6Cidr": ""}, "does not appear to be an IPv4 or IPv6 network"),
        ({"subnetV6Cidr": "10.0.16.0/20"}, "subnetV6Cidr 10.0.16.0/20 is not IPv6"),
        ({"ipv6Addr": "2600:1f14:a:b200::1c"}, "not in subnetV6Cidr 2600:1f14:a:b100::/64"),
    ],
)
def test_an_ipv6_node_refuses_a_branch_eni_without_a_usable_ipv6_address(
    fields: dict[str, str], problem: str
) -> None:
    with pytest.raises(PodEniAnnotationError, match=problem):
        parse_pod_eni(json.dumps([{**WRITTEN_V6[0], **fields}]), ipv6=True)


def test_an_ipv6_lookup_answers_with_the_ipv6_side() -> None:
    cache = PodCache()
    annotated = {ANNOTATION: json.dumps(WRITTEN_V6)}
    cache.replace_all(
        [PodInfo(namespace="db", name="v6", annotations=annotated, requests_pod_eni=True)],
        resource_version="1",
    )
    assert BranchPodLookup(pods=lambda: cache, ipv6=True).branch_eni("db", "v6", wait_s=0) == BRANCH_V6


def _pod(name: str, *, eni: bool = True, annotated: bool = True) -> PodInfo:
    annotations = {ANNOTATION: json.dumps(WRITTEN)} if annotated else {}
    return PodInfo(namespace="db", name=name, annotations=annotations, requests_pod_eni=eni)


@pytest.fixture
def cache() -> PodCache:
    cache = PodCache()
    cache.replace_all([_pod("orders"), _pod("web", eni=False, annotated=False)], resource_version="1")
    return cache


def test_branch_and_ordinary_pods(cache: PodCache) -> None:
    lookup = BranchPodLookup(pods=lambda: cache)
    assert lookup.branch_eni("db", "orders", wait_s=0) == BRANCH
    assert lookup.branch_eni("db", "web", wait_s=0) is None
    assert lookup.branch_eni("db", "", wait_s=0) is None  # no pod identity: no policy can select it


def test_waits_for_the_annotation_then_answers(cache: PodCache) -> None:
    cache.upsert(_pod("late", annotated=False))
    lookup = BranchPodLookup(pods=lambda: cache)
    later = threading.Timer(0.2, lambda: cache.upsert(_pod("late")))
    later.start()
    started = time.monotonic()
    assert lookup.branch_eni("db", "late", wait_s=5) == BRANCH
    assert 0.15 < time.monotonic() - started < 4


def test_a_missing_annotation_is_a_retryable_error_naming_it(cache: PodCache) -> None:
    cache.upsert(_pod("stuck", annotated=False))
    with pytest.raises(BranchLookupError, match=r"no vpc\.amazonaws\.com/pod-eni annotation after 0s") as err:
        BranchPodLookup(pods=lambda: cache).branch_eni("db", "stuck", wait_s=0.05)
    assert err.value.retryable and "VPC resource controller" in str(err.value)


def test_waits_for_a_pod_not_listed_yet_and_fails_when_it_never_shows(cache: PodCache) -> None:
    lookup = BranchPodLookup(pods=lambda: cache)
    threading.Timer(0.1, lambda: cache.upsert(_pod("new", eni=False, annotated=False))).start()
    assert lookup.branch_eni("db", "new", wait_s=5) is None
    with pytest.raises(BranchLookupError, match="not among the pods") as err:
        lookup.branch_eni("db", "ghost", wait_s=0.05)
    assert err.value.retryable


def test_without_the_pod_list_nothing_is_guessed() -> None:
    for pods in (None, PodCache()):  # not connected; connected but not listed yet
        with pytest.raises(BranchLookupError, match="has not listed this node's pods") as err:
            BranchPodLookup(pods=lambda p=pods: p).branch_eni("db", "orders", wait_s=0)
        assert err.value.retryable


def test_a_malformed_annotation_is_not_retried(cache: PodCache) -> None:
    cache.upsert(PodInfo(namespace="db", name="bad", annotations={ANNOTATION: "[]"}, requests_pod_eni=True))
    with pytest.raises(BranchLookupError, match="non-empty JSON list") as err:
        BranchPodLookup(pods=lambda: cache).branch_eni("db", "bad", wait_s=0)
    assert not err.value.retryable
