"""The one ENI ownership rule node init and the reconciler share, and the tags a managed ENI gets."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from vpccni.awsutils.tags import TAG_CLUSTER_NAME, TAG_ENI_OWNER, TAG_INSTANCE_ID, TAG_NO_MANAGE, TagSettings
from vpccni.ipamd.ownership import EniOwnership
from vpccni.ipamd.pool.testing_cloud import FakeCloud
from vpccni.ipamd.ports import CloudError, EniDescription

ME = "i-0me"
OURS = EniOwnership(
    instance_id=ME,
    primary_eni_id="eni-primary",
    tags=TagSettings(cluster_name="prod", additional_tags={"team": "net"}),
)


def eni(eni_id: str = "eni-1", **changes: object) -> EniDescription:
    base = EniDescription(
        eni_id=eni_id, mac="02:00:00:00:00:02", device_number=1, primary_ip=IPv4Address("10.0.0.5")
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_cards_above_0_are_left_alone_until_a_mode_manages_them() -> None:
    on_card_1 = eni(network_card=1)
    assert not OURS.manages(on_card_1)
    assert replace(OURS, network_cards=frozenset({0, 1})).manages(on_card_1)


def test_efa_only_enis_are_left_alone_and_efa_ones_are_not() -> None:
    assert not OURS.manages(eni(interface_type="efa-only"))
    assert OURS.manages(eni(interface_type="efa"))


def test_the_primary_eni_is_managed_whatever_its_tags() -> None:
    assert OURS.manages(eni("eni-primary", tags=((TAG_NO_MANAGE, "true"),)))
    assert not OURS.manages(eni(tags=((TAG_NO_MANAGE, "true"),)))


def test_a_managed_eni_gets_upstreams_tags_except_the_trunk() -> None:
    stale = eni(tags=((TAG_INSTANCE_ID, "i-0previous"), ("team", "net")))
    assert OURS.missing_tags(stale) == {
        TAG_INSTANCE_ID: ME,
        TAG_CLUSTER_NAME: "prod",
        TAG_ENI_OWNER: "amazon-vpc-cni",
    }
    assert OURS.missing_tags(eni(interface_type="trunk")) == {}


def test_tagging_writes_only_whats_missing_and_survives_a_failure() -> None:
    cloud = FakeCloud()
    existing = cloud.add_existing_eni(device_number=1, tags={"team": "net"})
    OURS.tag(cloud, existing)
    assert cloud.eni(existing.eni_id).tag_map[TAG_INSTANCE_ID] == ME
    tagged = cloud.eni(existing.eni_id)
    OURS.tag(cloud, tagged)
    assert cloud.calls.count("tag_eni") == 1  # nothing missing: no call
    other = cloud.add_existing_eni(device_number=2)
    cloud.fail("tag_eni", CloudError("denied", code="UnauthorizedOperation"))
    OURS.tag(cloud, other)  # logged, not raised: the ENI still serves pods
    assert TAG_INSTANCE_ID not in cloud.eni(other.eni_id).tag_map
