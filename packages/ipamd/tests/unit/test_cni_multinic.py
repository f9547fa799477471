"""Pods with one interface per network card (vpccni.ipamd.cni.multinic) through the CNI service, on the
fakes of its ports: two cards, card 0's addresses on the primary ENI, card 1's on its device 0."""

from __future__ import annotations

from typing import Any

import pytest
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import MULTI_NIC_ANNOTATION, MULTI_NIC_VALUE
from vpccni.cniplugin.version import VERSION
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cardallocator import CardAllocators
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.cni.result import dummy_interface_name
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, FakeHostPodRules, FakePodNetwork, secondary_ips, two_cards
from vpccni.ipamd.pool.status import GrowthState
from vpccni.networkutils.names import attachment_veth_name, host_veth_name

POD_FD = 1001
MULTI = {"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {MULTI_NIC_ANNOTATION: MULTI_NIC_VALUE}}}
VETH0 = host_veth_name("ml", "trainer")
VETH1 = host_veth_name("ml", "trainer", index=1)


@pytest.fixture
def cards() -> tuple[CardAllocators, FakeAllocator, FakeAllocator]:
    return two_cards()


@pytest.fixture
def network() -> FakePodNetwork:
    return FakePodNetwork()


@pytest.fixture
def service(cards, network) -> CniService:
    allocator = cards[0]
    return CniService(
        allocator=allocator,
        network=network,
        host_rules=FakeHostPodRules(),
        classify_netns=lambda fd: NetnsKind.POD,
        multi_nic=allocator,
    )


def _request(command: str, *, container: str = "c1", pod: str = "trainer", version: str = "0.4.0",
             multi: bool = True, **conf: Any) -> Request:  # fmt: skip
    return Request(
        version=VERSION, command=command, container_id=container, ifname="eth0",
        netns_path=f"/var/run/netns/{container}", has_netns_fd=command in ("ADD", "CHECK"),
        k8s_args=K8sArgs(pod_name=pod, pod_namespace="ml"),
        netconf={"cniVersion": version, "name": "aws-cni", **(MULTI if multi else {}), **conf},
        cni_version=version,
    )  # fmt: skip


def _error(fn, *args) -> CNIError:
    with pytest.raises(CNIError) as info:
        fn(*args)
    return info.value


def test_add_gives_one_interface_per_card_in_upstreams_shape(service, network) -> None:
    result = service.handle(_request("ADD"), POD_FD)
    assert result == {
        "cniVersion": "0.4.0",
        "interfaces": [
            {"name": VETH0, "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "sandbox": "/var/run/netns/c1", "mac": "254"},
            {"name": VETH1, "mac": "02:00:00:00:00:01"},
            {"name": "mNicIf1", "sandbox": "/var/run/netns/c1", "mac": "10100"},
            {"name": dummy_interface_name("ml", "trainer"), "mac": "0", "sandbox": "0"},
        ],
        "ips": [
            {"version": "4", "address": "10.0.1.10/32", "interface": 1},
            {"version": "4", "address": "10.0.2.10/32", "interface": 3},
        ],
        "dns": {},
    }
    first, second = network.wired[VETH0][1], network.wired[VETH1][1]
    assert (first.ifname, first.index, first.route_table, str(first.gateway)) == (
        "eth0",
        0,
        254,
        "169.254.1.1",
    )
    assert (second.ifname, second.index, second.route_table, str(second.gateway)) == (
        "mNicIf1", 1, 10100, "169.254.1.2"
    )  # fmt: skip


def test_a_pod_without_the_annotation_is_unchanged(service, cards, network) -> None:
    result = service.handle(_request("ADD", multi=False), POD_FD)
    assert [i["name"] for i in result["interfaces"]] == [VETH0, "eth0", dummy_interface_name("ml", "trainer")]
    assert cards[2].allocations() == () and list(network.wired) == [VETH0]


def test_the_annotation_without_enable_multi_nic_is_a_config_error(cards, network) -> None:
    service = CniService(allocator=cards[0], network=network, classify_netns=lambda fd: NetnsKind.POD)
    err = _error(service.handle, _request("ADD"), POD_FD)
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "ENABLE_MULTI_NIC" in err.msg and "ml/trainer" in err.msg and MULTI_NIC_ANNOTATION in err.msg
    assert network.wired == {} and cards[1].allocations() == ()


def test_a_node_with_one_managed_card_gives_one_interface(network) -> None:
    one = CardAllocators({0: FakeAllocator(secondary_ips("10.0.1.10", 2, device_number=0, route_table=254))})
    service = CniService(
        allocator=one, network=network, classify_netns=lambda fd: NetnsKind.POD, multi_nic=one
    )
    result = service.handle(_request("ADD"), POD_FD)
    assert [i["name"] for i in result["interfaces"]][1] == "eth0" and len(result["ips"]) == 1


@pytest.mark.parametrize(("state", "code"), [(GrowthState.GROWING, 11), (GrowthState.NO_ENI_SLOTS, 999)])
def test_no_address_on_one_card_fails_and_gives_back_the_others(cards, network, state, code) -> None:
    allocator, first, second = cards
    for n in range(3):  # card 1 has no address left
        second.assign(
            network="aws-cni", container_id=f"x{n}", ifname="eth0", pod_namespace="ml", pod_name="x"
        )
    second.exhausted_state = state
    service = CniService(allocator=allocator, network=network, classify_netns=lambda fd: NetnsKind.POD,
                         multi_nic=allocator)  # fmt: skip
    err = _error(service.handle, _request("ADD"), POD_FD)
    assert err.code == code and "network card 1" in err.msg and "ml/trainer" in err.msg
    assert network.wired == {} and first.allocations() == () and first.free == 3


def test_a_failed_interface_rolls_back_every_interface(service, cards, network) -> None:
    network.fail_wire_of["mNicIf1"] = RuntimeError("File exists")
    err = _error(service.handle, _request("ADD"), POD_FD)
    assert err.code == ErrorCode.INTERNAL and "mNicIf1" in err.msg and "File exists" in err.msg
    assert network.wired == {} and {s.ifname for s in network.unwired} == {"eth0", "mNicIf1"}
    assert cards[0].allocations() == () and cards[1].free == 3 and cards[2].free == 3
    assert service.handle(_request("ADD"), POD_FD)  # the runtime's retry works


def test_a_failed_checkpoint_write_on_one_card_rolls_back_every_interface(service, cards, network) -> None:
    cards[2].fail_next_write = OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        service.handle(_request("ADD"), POD_FD)
    assert network.wired == {} and cards[0].allocations() == ()
    assert cards[1].free == 3 and cards[2].free == 3


def test_add_twice_fails_as_the_spec_requires(service, cards) -> None:
    service.handle(_request("ADD"), POD_FD)
    err = _error(service.handle, _request("ADD"), POD_FD)
    assert err.code == ErrorCode.INTERNAL and "already has interface eth0" in err.msg
    assert len(cards[0].allocations()) == 2


def test_del_unwires_and_releases_every_interface_and_is_idempotent(service, cards, network) -> None:
    service.handle(_request("ADD"), POD_FD)
    service.handle(_request("DEL"), POD_FD)
    assert [(s.ifname, s.index, s.host_veth) for s in network.unwired] == [
        ("eth0", 0, VETH0),
        ("mNicIf1", 1, VETH1),
    ]
    assert network.veths_kept == [VETH0, VETH1]  # they go with the pod's namespace
    assert cards[0].allocations() == () and cards[1].free == 3 and cards[2].free == 3
    service.handle(_request("DEL"), None)
    assert len(network.unwired) == 2


def test_del_without_ipamds_state_reads_every_interface_from_prev_result(service, network) -> None:
    result = service.handle(_request("ADD"), POD_FD)
    restarted = CniService(
        allocator=two_cards()[0], network=network, classify_netns=lambda fd: NetnsKind.POD,
        multi_nic=two_cards()[0],
    )  # fmt: skip
    restarted.handle(_request("DEL", prevResult=result), None)
    assert [(s.ifname, str(s.ip), s.route_table, s.host_veth) for s in network.unwired] == [
        ("eth0", "10.0.1.10", 254, VETH0),
        ("mNicIf1", "10.0.2.10", 10100, VETH1),
    ]
    assert network.wired == {}


def test_del_after_multi_nic_was_turned_off_still_removes_every_interface(service, cards, network) -> None:
    result = service.handle(_request("ADD"), POD_FD)
    # ipamd restarted without ENABLE_MULTI_NIC: only card 0 is known; the prevResult tells the rest.
    only_card_0 = CniService(allocator=cards[1], network=network, classify_netns=lambda fd: NetnsKind.POD)
    only_card_0.handle(_request("DEL", prevResult=result), None)
    assert [s.ifname for s in network.unwired] == ["eth0", "mNicIf1"]
    assert cards[1].allocations() == ()


def test_check_verifies_every_interface(service, network) -> None:
    result = service.handle(_request("ADD"), POD_FD)
    assert service.handle(_request("CHECK", prevResult=result), POD_FD) is None
    network.drift(VETH1, "route 0.0.0.0/0 via 169.254.1.2 dev mNicIf1 table 1 missing")
    err = _error(service.handle, _request("CHECK", prevResult=result), POD_FD)
    assert err.code == ErrorCode.INTERNAL and "mNicIf1: route 0.0.0.0/0" in err.msg and "10.0.2.10" in err.msg
    wrong = {**result, "ips": [result["ips"][0]]}
    assert (
        "recreate the pod sandbox" in _error(service.handle, _request("CHECK", prevResult=wrong), POD_FD).msg
    )


def test_gc_collects_every_interface(service, cards, network) -> None:
    service.handle(_request("ADD"), POD_FD)
    service.handle(_request("ADD", container="keep", pod="keep", multi=False), POD_FD + 1)
    gc = _request(
        "GC", version="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    )
    service.handle(gc, None)
    assert [(s.ifname, s.host_veth) for s in network.unwired] == [("eth0", VETH0), ("mNicIf1", VETH1)]
    assert [a.key.container_id for a in cards[0].allocations()] == ["keep"]


def test_names_held_by_another_live_sandbox_are_not_taken(service, cards, network) -> None:
    service.handle(_request("ADD", container="old"), POD_FD)
    service.handle(_request("ADD", container="new"), POD_FD + 1)  # the same pod, recreated meanwhile
    own = [attachment_veth_name("new", "eth0"), attachment_veth_name("new", "mNicIf1")]
    assert set(network.wired) == {VETH0, VETH1, *own}
    assert [a.allocation.host_veth for a in cards[0].allocations() if a.key.container_id == "new"] == own
    service.handle(_request("DEL", container="old"), None)
    assert set(network.wired) == set(own)


class _RefusingAgent:
    """A network policy agent that never confirms (strict mode must then roll the whole pod back)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def enforce(self, *, namespace: str, name: str, mode: str, timeout_s: float, wait: bool) -> bool:
        self.asked.append(f"{namespace}/{name}")
        return False


def test_strict_network_policy_holds_a_multi_nic_pod_and_rolls_every_card_back(cards, network) -> None:
    from vpccni.ipamd.cni.netpolicy import PolicyAdmission

    allocator = cards[0]
    agent = _RefusingAgent()
    service = CniService(
        allocator=allocator, network=network, host_rules=FakeHostPodRules(),
        classify_netns=lambda fd: NetnsKind.POD, multi_nic=allocator,
        policy=PolicyAdmission(mode="strict", agent=agent, where="npa.sock"),
    )  # fmt: skip
    err = _error(service.handle, _request("ADD"), POD_FD)
    assert err.code == ErrorCode.TRY_AGAIN_LATER and agent.asked == ["ml/trainer"]
    assert network.wired == {}
    assert cards[1].allocations() == () and cards[2].allocations() == ()
