"""The trunk ENI: spotted where ipamd sets up ENIs, asked for through the CNINode only while a slot is free,
and found on the host by its MAC."""

from __future__ import annotations

from ipaddress import IPv4Address

from vpccni.awsutils.trunking import branch_interfaces, trunking_compatible
from vpccni.ipamd.pool.testing import FakeNodeNetwork
from vpccni.ipamd.ports import EniAddresses, EniDescription
from vpccni.ipamd.sgp.trunk import TrunkEni, TrunkRequest, TrunkTracker
from vpccni.k8sapi import CniNodeFeature
from vpccni.k8sapi.testing import FakeKubeApi
from vpccni.networkutils.testing import FakeNetwork

TRUNK = EniDescription(
    eni_id="eni-trunk", mac="0A:AA:00:00:00:02", device_number=2, primary_ip=IPv4Address("10.0.0.9"),
    interface_type="trunk",
)  # fmt: skip
PLAIN = EniAddresses(
    eni_id="eni-plain", mac="0a:aa:00:00:00:01", device_number=1, primary_ip=IPv4Address("10.0.0.8")
)


def tracker() -> tuple[TrunkTracker, FakeNodeNetwork, object]:
    _, host = FakeNetwork().add_namespace("host")
    inner = FakeNodeNetwork()
    return TrunkTracker(inner, netlink=host), inner, host


def test_the_trunk_is_spotted_when_set_up_and_forgotten_when_torn_down() -> None:
    trunks, inner, host = tracker()
    trunks.setup_eni(PLAIN)
    assert trunks.trunk is None and trunks.link_name() is None
    trunks.setup_eni(TRUNK)
    assert inner.set_up == {"eni-plain", "eni-trunk"}  # every ENI's setup still happens
    assert trunks.trunk == TrunkEni(eni_id="eni-trunk", mac="0a:aa:00:00:00:02")
    host.add_link("eth2", mac="0a:aa:00:00:00:02", up=True)  # type: ignore[attr-defined]
    assert trunks.link_name() == "eth2"
    host.delete_link("eth2")  # type: ignore[attr-defined]
    host.add_link("eth5", mac="0a:aa:00:00:00:02", up=True)  # type: ignore[attr-defined]
    assert trunks.link_name() == "eth5"  # renamed or re-plugged: found again by MAC
    trunks.teardown_eni(eni_id="eni-trunk", device_number=2, primary_ip=TRUNK.primary_ip)
    assert trunks.trunk is None and trunks.link_name() is None


def _request(trunks: TrunkTracker, api: FakeKubeApi, enis: list[int], errors: list[str]) -> TrunkRequest:
    return TrunkRequest(
        tracker=trunks, api=lambda: api if api.available else None, eni_count=lambda: enis[0], max_enis=3,
        on_error=errors.append,
    )  # fmt: skip


def test_security_groups_for_pods_is_asked_for_only_with_a_free_slot_and_until_the_trunk_comes() -> None:
    trunks, _, _ = tracker()
    api = FakeKubeApi(node_name="ip-10-0-0-5")
    api.modify_cninode_externally([CniNodeFeature(name="CustomNetworking", value="az1")])
    enis, errors = [3], []
    request = _request(trunks, api, enis, errors)
    assert request.step() is False
    assert api.cninodes["ip-10-0-0-5"].features == (CniNodeFeature(name="CustomNetworking", value="az1"),)
    enis[0] = 2  # an ENI was freed: a slot for the trunk
    assert request.step() is False
    assert CniNodeFeature(name="SecurityGroupsForPods") in api.cninodes["ip-10-0-0-5"].features
    assert CniNodeFeature(name="CustomNetworking", value="az1") in api.cninodes["ip-10-0-0-5"].features
    trunks.setup_eni(TRUNK)
    assert request.step() is True and errors == []


def test_an_unreachable_api_server_is_retried_and_counted() -> None:
    trunks, _, _ = tracker()
    api = FakeKubeApi()
    api.modify_cninode_externally([])
    errors: list[str] = []
    request = TrunkRequest(
        tracker=trunks, api=lambda: api, eni_count=lambda: 1, max_enis=3, on_error=errors.append
    )
    api.set_available(False)
    assert request.step() is False and errors == ["tryEnableSecurityGroupsForPods"]
    api.set_available(True)
    assert (
        request.step() is False
        and CniNodeFeature(name="SecurityGroupsForPods") in api.cninodes[api.node_name].features
    )


def test_branch_limits_per_instance_type() -> None:
    assert branch_interfaces("c5.large") == 9 and branch_interfaces("c6i.12xlarge") == 114
    assert branch_interfaces("c4.large") == 0 and not trunking_compatible("c4.large")
    assert branch_interfaces("x99.huge") is None and trunking_compatible("x99.huge")  # upstream's default
