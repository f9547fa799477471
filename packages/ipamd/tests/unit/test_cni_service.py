"""The CNI endpoint's logic (vpccni.ipamd.cni.service) against the stateful fakes of its ports."""

from __future__ import annotations

import threading
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.version import VERSION
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.locks import KeyedLocks
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.cni.result import dummy_interface_name
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, FakeHostPodRules, FakePodNetwork, secondary_ips
from vpccni.ipamd.pool.status import GrowthState
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.pod import PodInterface

POD_FD = 1001  # fake fds: the fakes never touch them


def _host_is(host_fd: int):
    return lambda fd: NetnsKind.HOST if fd == host_fd else NetnsKind.POD


@pytest.fixture
def allocator() -> FakeAllocator:
    return FakeAllocator(secondary_ips("10.0.1.10", 3))


@pytest.fixture
def network() -> FakePodNetwork:
    return FakePodNetwork()


@pytest.fixture
def rules() -> FakeHostPodRules:
    return FakeHostPodRules()


@pytest.fixture
def service(allocator: FakeAllocator, network: FakePodNetwork, rules: FakeHostPodRules) -> CniService:
    return CniService(
        allocator=allocator, network=network, host_rules=rules, classify_netns=lambda fd: NetnsKind.POD
    )


def _request(command: str, *, container: str = "c1", pod: str = "web-0", version: str = "0.4.0",
             **conf: Any) -> Request:  # fmt: skip
    return Request(
        version=VERSION, command=command, container_id=container, ifname="eth0",
        netns_path=f"/var/run/netns/{container}", has_netns_fd=command in ("ADD", "CHECK"),
        k8s_args=K8sArgs(pod_name=pod, pod_namespace="default"),
        netconf={"cniVersion": version, "name": "aws-cni", **conf}, cni_version=version,
    )  # fmt: skip


def _error(fn, *args) -> CNIError:
    with pytest.raises(CNIError) as info:
        fn(*args)
    return info.value


def test_add_answers_upstream_shape_in_0_4_0(service: CniService, network: FakePodNetwork) -> None:
    result = service.handle(_request("ADD"), POD_FD)
    veth = host_veth_name("default", "web-0")
    assert result == {
        "cniVersion": "0.4.0",
        "interfaces": [
            {"name": veth, "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "sandbox": "/var/run/netns/c1", "mac": "2"},
            {"name": dummy_interface_name("default", "web-0"), "mac": "0", "sandbox": "1"},
        ],
        "ips": [{"version": "4", "address": "10.0.1.10/32", "interface": 1}],
        "dns": {},
    }
    assert dummy_interface_name("default", "web-0") == "dummy" + veth[3:]
    spec = network.wired[veth][1]
    assert (spec.ip, spec.route_table, spec.mtu, spec.ifname) == (IPv4Address("10.0.1.10"), 2, 9001, "eth0")


def test_add_follows_netconf_and_version(service: CniService, network: FakePodNetwork) -> None:
    result = service.handle(_request("ADD", version="1.0.0", vethPrefix="abc", mtu="1500"), POD_FD)
    assert isinstance(result, dict)
    assert result["cniVersion"] == "1.0.0" and "version" not in result["ips"][0]
    veth = host_veth_name("default", "web-0", prefix="abc")
    assert result["interfaces"][0]["name"] == veth and network.wired[veth][1].mtu == 1500


def test_add_twice_fails_as_the_spec_requires(service: CniService, allocator: FakeAllocator) -> None:
    service.handle(_request("ADD"), POD_FD)
    err = _error(service.handle, _request("ADD"), POD_FD)
    assert err.code == ErrorCode.INTERNAL and "already has interface eth0" in err.msg and "DEL" in err.msg
    assert allocator.free == 2


def test_failed_wiring_rolls_back_everything(service, allocator, network) -> None:
    network.fail_next_wire = RuntimeError("netlink said no")
    err = _error(service.handle, _request("ADD"), POD_FD)
    assert err.code == ErrorCode.INTERNAL and "netlink said no" in err.msg
    assert allocator.free == 3 and allocator.allocations() == ()
    assert allocator.released[0][1] == "SetupNSFailed"
    assert network.wired == {} and network.unwired[0].ip == IPv4Address("10.0.1.10")


@pytest.mark.parametrize(("state", "code"), [(GrowthState.GROWING, 11), (GrowthState.AT_MAX_PODS, 999)])
def test_no_address(allocator: FakeAllocator, network, state: GrowthState, code: int) -> None:
    empty = FakeAllocator([])
    empty.exhausted_state = state
    svc = CniService(allocator=empty, network=network, classify_netns=lambda fd: NetnsKind.POD)
    err = _error(svc.handle, _request("ADD"), POD_FD)
    assert err.code == code and "failed to assign an IP address to pod default/web-0" in err.msg
    assert network.wired == {}


def test_not_ready_is_try_again(service: CniService, allocator: FakeAllocator) -> None:
    allocator.ready = False
    err = _error(service.handle, _request("ADD"), POD_FD)
    assert err.code == ErrorCode.TRY_AGAIN_LATER and "not ready" in err.msg


def test_version_skew_is_refused(service: CniService) -> None:
    request = _request("STATUS", version="1.1.0")
    other = Request(version="0.0.1", command="STATUS", netconf=request.netconf, cni_version="1.1.0")
    err = _error(service.handle, other, None)
    assert err.code == ErrorCode.TRY_AGAIN_LATER and "0.0.1" in err.msg and VERSION in err.msg


@pytest.mark.parametrize("fd", [None, 7])
def test_add_needs_a_pod_netns_that_is_not_ours(allocator, network, fd) -> None:
    svc = CniService(allocator=allocator, network=network, classify_netns=_host_is(7))
    err = _error(svc.handle, _request("ADD"), fd)
    assert err.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES
    assert allocator.free == 3


def test_invalid_netconf_is_7(service: CniService) -> None:
    assert _error(service.handle, _request("ADD", vethPrefix="eth"), POD_FD).code == 7


def test_del_releases_unwires_and_is_idempotent(service, allocator, network) -> None:
    service.handle(_request("ADD"), POD_FD)
    assert service.handle(_request("DEL"), None) is None
    assert allocator.allocations() == () and network.wired == {}
    assert service.handle(_request("DEL"), None) is None
    assert service.handle(_request("DEL", container="never-added"), None) is None
    assert [s.ip for s in network.unwired] == [IPv4Address("10.0.1.10")]


def test_del_with_the_pod_netns_leaves_the_veth_to_it_and_without_deletes_it(
    allocator: FakeAllocator, network: FakePodNetwork
) -> None:
    own_fd = 7  # stands for ipamd's own namespace
    service = CniService(allocator=allocator, network=network, classify_netns=_host_is(own_fd))
    service.handle(_request("ADD", container="a", pod="a"), POD_FD)
    service.handle(_request("ADD", container="b", pod="b"), POD_FD + 1)
    service.handle(_request("ADD", container="c", pod="c"), POD_FD + 2)
    service.handle(_request("DEL", container="a", pod="a"), POD_FD)
    service.handle(_request("DEL", container="b", pod="b"), None)
    service.handle(_request("DEL", container="c", pod="c"), own_fd)
    assert [s.host_veth for s in network.unwired] == [host_veth_name("default", p) for p in "abc"]
    assert network.veths_kept == [host_veth_name("default", "a")]


def test_del_without_state_uses_prev_result(service, network) -> None:
    prev = {"cniVersion": "0.4.0", "interfaces": [{"name": "x"}, {"name": "eth0", "mac": "3"}],
            "ips": [{"version": "4", "address": "10.0.9.9/32", "interface": 1}]}  # fmt: skip
    service.handle(_request("DEL", prevResult=prev), None)
    (spec,) = network.unwired
    assert (spec.ip, spec.route_table) == (IPv4Address("10.0.9.9"), 3)


def test_del_leaves_an_address_that_now_belongs_to_another_pod(service, network) -> None:
    service.handle(_request("ADD", container="other", pod="other"), POD_FD)
    prev = {
        "interfaces": [{"name": "eth0", "mac": "2"}],
        "ips": [{"address": "10.0.1.10/32", "interface": 0}],
    }
    service.handle(_request("DEL", prevResult=prev), None)
    assert network.unwired == [] and len(network.wired) == 1


def test_del_that_cannot_unwire_keeps_the_address(service, allocator, network) -> None:
    service.handle(_request("ADD"), POD_FD)
    network.fail_unwire = RuntimeError("EBUSY")
    err = _error(service.handle, _request("DEL"), None)
    assert err.code == ErrorCode.TRY_AGAIN_LATER and "EBUSY" in err.msg
    assert len(allocator.allocations()) == 1


def test_check_passes_then_reports_drift(service, network) -> None:
    service.handle(_request("ADD"), POD_FD)
    assert service.handle(_request("CHECK"), POD_FD) is None
    network.drift(host_veth_name("default", "web-0"), "route 169.254.1.1/32 dev eth0 scope link missing")
    err = _error(service.handle, _request("CHECK"), POD_FD)
    assert err.code == ErrorCode.INTERNAL and "169.254.1.1/32" in err.msg and "10.0.1.10" in err.msg


def test_check_without_add_and_with_a_wrong_prev_result(service) -> None:
    assert "no address" in _error(service.handle, _request("CHECK"), POD_FD).msg
    service.handle(_request("ADD"), POD_FD)
    prev = {"interfaces": [{"name": "eth0", "mac": "2"}], "ips": [{"address": "10.0.7.7/32", "version": "4"}]}
    assert "10.0.7.7" in _error(service.handle, _request("CHECK", prevResult=prev), POD_FD).msg


def test_status(service, allocator) -> None:
    assert service.handle(_request("STATUS", version="1.1.0"), None) is None
    allocator.ready = False
    err = _error(service.handle, _request("STATUS", version="1.1.0"), None)
    assert err.code == ErrorCode.NOT_AVAILABLE and "initialisation" in err.msg


def test_status_when_the_pool_cannot_grow(allocator, network) -> None:
    svc = CniService(allocator=FakeAllocator([]), network=network)
    err = _error(svc.handle, _request("STATUS", version="1.1.0"), None)
    assert err.code == ErrorCode.NOT_AVAILABLE and "maximum number of pods" in err.msg


def test_gc_collects_what_is_not_valid(service, allocator, network, rules) -> None:
    for i, c in enumerate(("keep", "drop1", "drop2")):
        service.handle(_request("ADD", container=c, pod=c), POD_FD + i)
    rules.addresses = {IPv4Address("10.0.1.10"), IPv4Address("10.0.1.11"), IPv4Address("10.9.9.9")}
    gc = _request(
        "GC", version="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    )
    assert service.handle(gc, None) is None
    assert [a.key.container_id for a in allocator.allocations()] == ["keep"]
    assert {s.host_veth for s in network.unwired} == {
        host_veth_name("default", c) for c in ("drop1", "drop2")
    }
    kept_ip = allocator.allocations()[0].allocation.ip
    assert rules.addresses == {kept_ip}
    assert {r for _, r in allocator.released} == {"GarbageCollected"}


def test_gc_needs_valid_attachments_and_ignores_other_networks(service, allocator) -> None:
    service.handle(_request("ADD"), POD_FD)
    assert _error(service.handle, _request("GC", version="1.1.0"), None).code == 7
    other = {"name": "other-net", "cniVersion": "1.1.0", "cni.dev/valid-attachments": []}
    service.handle(Request(version=VERSION, command="GC", netconf=other, cni_version="1.1.0"), None)
    assert len(allocator.allocations()) == 1


def test_add_after_another_plugin_keeps_its_result(service) -> None:
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "bridge0"}],
        "ips": [],
        "dns": {"nameservers": ["x"]},
    }
    result = service.handle(_request("ADD", version="1.0.0", prevResult=prev), POD_FD)
    assert isinstance(result, dict)
    assert next(i["name"] for i in result["interfaces"]) == "bridge0" and len(result["interfaces"]) == 4
    assert result["ips"][0]["interface"] == 2 and result["dns"] == {"nameservers": ["x"]}


def test_keyed_locks_serialise_one_key_and_not_others() -> None:
    locks = KeyedLocks()
    inside = threading.Event()
    release = threading.Event()
    other_done = threading.Event()
    same_entered = threading.Event()

    def hold_a() -> None:
        with locks.hold(("a", "eth0")):
            inside.set()
            release.wait(5)

    def other_key() -> None:
        with locks.hold(("b", "eth0")):
            other_done.set()

    def same_key() -> None:
        with locks.hold(("a", "eth0")):
            same_entered.set()

    first = threading.Thread(target=hold_a)
    first.start()
    assert inside.wait(5)
    threads = [threading.Thread(target=other_key), threading.Thread(target=same_key)]
    for t in threads:
        t.start()
    assert other_done.wait(5)  # a different pod is not blocked
    assert not same_entered.is_set()  # the same pod waits ...
    release.set()
    assert same_entered.wait(5)  # ... until the first operation ends
    for t in [first, *threads]:
        t.join(5)
    assert len(locks) == 0


def test_a_bad_prev_result_on_add_touches_nothing(service, allocator, network) -> None:
    err = _error(service.handle, _request("ADD", prevResult={"ips": "not a list"}), POD_FD)
    assert err.code == ErrorCode.DECODING_FAILURE
    assert allocator.allocations() == () and network.wired == {}


def test_a_failed_checkpoint_write_after_wiring_unwires_and_fails(service, allocator, network) -> None:
    allocator.fail_next_write = OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left"):  # the server answers it as an internal error
        service.handle(_request("ADD"), POD_FD)
    assert network.wired == {} and [s.ip for s in network.unwired] == [IPv4Address("10.0.1.10")]
    assert allocator.free == 3 and allocator.allocations() == ()
    assert service.handle(_request("ADD"), POD_FD)  # the runtime's retry gets the address


def test_failed_wiring_releases_only_after_the_assignment_was_written(service, allocator, network) -> None:
    network.fail_next_wire = RuntimeError("veth exists")
    allocator.fail_next_write = OSError(28, "No space left on device")
    _error(service.handle, _request("ADD"), POD_FD)
    # The write failed, so the address was already given back: released once, not twice.
    assert [reason for _, reason in allocator.released] == ["WriteFailed"]
    assert allocator.free == 3


def test_ipv6_pod_add_del_and_prev_result(network: FakePodNetwork) -> None:
    allocator = FakeAllocator(secondary_ips("2001:db8:0:100:1::", 2, device_number=0, route_table=254))
    service = CniService(allocator=allocator, network=network, classify_netns=lambda fd: NetnsKind.POD)
    result = service.handle(_request("ADD"), POD_FD)
    assert isinstance(result, dict)
    assert result["ips"] == [{"version": "6", "address": "2001:db8:0:100:1::/128", "interface": 1}]
    assert result["interfaces"][1]["mac"] == "254" and result["interfaces"][2]["sandbox"] == "0"
    veth = host_veth_name("default", "web-0")
    assert network.wired[veth][1].ip == IPv6Address("2001:db8:0:100:1::")
    service.handle(_request("CHECK", prevResult=result), POD_FD)
    service.handle(_request("DEL", prevResult=result), POD_FD)
    assert allocator.free == 2
    # Without ipamd's state, DEL still finds the pod's rules from the IPv6 prevResult.
    service.handle(_request("DEL", container="gone", prevResult=result), None)
    assert network.unwired[-1].ip == IPv6Address("2001:db8:0:100:1::")
    # The oldest spec versions put an IPv6 address in ip6.
    assert service.handle(_request("ADD", container="old", version="0.2.0"), POD_FD) == {
        "cniVersion": "0.2.0",
        "ip6": {"ip": "2001:db8:0:100:1::1/128"},
        "dns": {},
    }


class _Chained:
    """A chained plugin (egress-cni's place) recording what the service hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def handle(self, request: Request, netns_fd: int | None, *, answer_by: float | None = None) -> object:
        self.calls.append(("handle", request.command))
        return {"cniVersion": "0.4.0"}

    def abandon_add(self, request: Request, netns_fd: int | None) -> None:
        self.calls.append(("abandon_add", request.command))

    def delete_queued(self, request: Request) -> None:
        self.calls.append(("delete_queued", request.command))

    def add_with_pod(self, request: Request, netns_fd: int, version: str) -> list[dict[str, Any]]:
        self.calls.append(("add_with_pod", request.container_id))
        return [{"name": "egr0123456789a"}, {"name": "v4if0", "sandbox": request.netns_path}]

    def forget(self, request: Request, netns_fd: int | None, *, remove_veth: bool = False) -> None:
        self.calls.append(("forget", request.container_id))

    @property
    def pod_ifnames(self) -> tuple[str, ...]:
        return ("v4if0",)


def test_chained_types_go_to_their_plugin_which_hears_of_aws_cnis_add_and_del(
    allocator: FakeAllocator, network: FakePodNetwork
) -> None:
    egress = _Chained()
    service = CniService(
        allocator=allocator,
        network=network,
        classify_netns=lambda fd: NetnsKind.POD,
        chained={"egress-cni": egress},
    )
    result = service.handle(_request("ADD"), POD_FD)
    assert egress.calls == [("add_with_pod", "c1")], "asked before aws-cni's ADD answers"
    names = [i["name"] for i in result["interfaces"]]
    assert names[-2:] == ["egr0123456789a", "v4if0"], "its interfaces listed last, after aws-cni's"
    assert service.handle(_request("ADD", type="egress-cni"), POD_FD) == {"cniVersion": "0.4.0"}
    service.abandon_add(_request("ADD", type="egress-cni"), POD_FD)
    service.delete_queued(_request("DEL", type="egress-cni"))
    service.handle(_request("DEL"), POD_FD)
    assert egress.calls[1:] == [
        ("handle", "ADD"), ("abandon_add", "ADD"), ("delete_queued", "DEL"), ("forget", "c1")
    ]  # fmt: skip
    assert len(allocator.allocations()) == 0, "egress-cni's ADD took no pod address"


def test_a_chained_plugins_interface_does_not_keep_the_pods_namespace_alive(
    allocator: FakeAllocator, network: FakePodNetwork
) -> None:
    """aws-cni's DEL leaves its veth to go with the namespace though egress-cni's v4if0 is still in it (an
    egress-cni DEL that did not run): the runtime destroys the namespace after the chain's DEL."""
    service = CniService(
        allocator=allocator, network=network, classify_netns=lambda fd: NetnsKind.POD,
        chained={"egress-cni": _Chained()},
    )  # fmt: skip
    service.handle(_request("ADD"), POD_FD)
    network.wire(POD_FD, PodInterface(host_veth="egr0123456789a", ip=IPv4Address("169.254.172.2"),
                                      ifname="v4if0"))  # fmt: skip
    service.handle(_request("DEL"), POD_FD)
    assert network.veths_kept == [host_veth_name("default", "web-0")]
