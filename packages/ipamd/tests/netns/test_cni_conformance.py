"""CNI conformance: the REAL aws-cni shim run as a runtime runs it, against the REAL CNI endpoint served
in-process, wiring pods for real in namespaces this test creates.

ipamd's side lives in a "node" namespace of its own (the endpoint's worker threads enter it), never in
the machine's namespace. Addresses come from a stateful fake allocator. Modelled on the reference
plugins' tests (ptp_test.go): every supported version; ADD -> CHECK -> DEL; DEL twice, without ADD and
after the netns is gone; ADD twice; CHECK after drift; GC; STATUS; each error code. After every test the
node namespace and the allocator must be exactly as clean as before. The same for IPv6 pods (an IPv6-mode
node) and for egress-cni chained after aws-cni with the previous result.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import pytest
from vpccni.cniplugin import bundle, delqueue, versions
from vpccni.cniplugin.errors import ErrorCode
from vpccni.cniplugin.netconf import MULTI_NIC_ANNOTATION, MULTI_NIC_VALUE
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cardallocator import CardAllocators
from vpccni.ipamd.cni.delqueue_drain import drain_del_queue
from vpccni.ipamd.cni.result import dummy_interface_name
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, secondary_ips, serve_in_netns, two_cards
from vpccni.ipamd.egress.netconf import parse_egress_netconf
from vpccni.ipamd.pool.status import GrowthState
from vpccni.networkutils.names import attachment_veth_name, host_veth_name
from vpccni.networkutils.netlink import open_netlink
from vpccni.networkutils.netns import ThreadNetnsNetlink, run_in_netns
from vpccni.networkutils.pod import PodWiring

SYSTEM_PYTHON = "/usr/bin/python3"
CHECK_VERSIONS = [v for v in versions.SUPPORTED_VERSIONS if versions.allows_check(v)]
ROUTE_TABLE = 2
DEFAULT_RULE_PRIORITIES = {0, 32766, 32767}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the netns tier needs root")


def _ip(*argv: str) -> str:
    return subprocess.run(["ip", *argv], check=True, capture_output=True, text=True).stdout


def _ip_json(netns: str, *argv: str) -> Any:
    return json.loads(_ip("-n", netns, "-j", *argv) or "[]")


@dataclass
class Pod:
    netns: str
    container_id: str
    name: str
    namespace: str = "default"
    interfaces: int = 1  # a multi-NIC pod's: one per network card

    @property
    def path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def veth(self) -> str:
        return host_veth_name(self.namespace, self.name)

    @property
    def veths(self) -> set[str]:
        return {host_veth_name(self.namespace, self.name, index=i) for i in range(self.interfaces)}


@dataclass
class Node:
    """The node namespace, the endpoint serving in it, and a runtime-like way to run the real shim."""

    name: str
    tmp: pathlib.Path
    shim: pathlib.Path
    allocator: FakeAllocator | CardAllocators
    suffix: str
    pods: list[Pod] = field(default_factory=list)

    @property
    def socket(self) -> str:
        return str(self.tmp / "run" / "cni.sock")

    @property
    def queue(self) -> str:
        return str(self.tmp / "del-queue")

    def new_pod(self, tag: str) -> Pod:
        pod = Pod(netns=f"vpccni-cni-{tag}-{self.suffix}", container_id=f"ctr-{tag}-{uuid.uuid4().hex[:8]}",
                  name=f"pod-{tag}")  # fmt: skip
        _ip("netns", "add", pod.netns)
        self.pods.append(pod)
        return pod

    def conf(self, version: str, **extra: Any) -> dict[str, Any]:
        return {
            "cniVersion": version, "name": "aws-cni", "type": "aws-cni", "mtu": "9001",
            "cniSocket": self.socket, "delQueueDir": self.queue,
            "pluginLogFile": str(self.tmp / "plugin.log"),
            **extra,
        }  # fmt: skip

    def cni(self, command: str, pod: Pod | None, conf: dict[str, Any] | bytes, **env: str | None) -> CniRun:
        environ = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
        if pod is not None:
            environ.update(
                CNI_CONTAINERID=pod.container_id, CNI_NETNS=pod.path, CNI_IFNAME="eth0",
                CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};"
                f"K8S_POD_INFRA_CONTAINER_ID={pod.container_id}",
            )  # fmt: skip
        for key, value in env.items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-I", "-S", str(self.shim)],
            input=data,
            env=environ,
            capture_output=True,
            timeout=60,
        )
        return CniRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    # --- what the node looks like -------------------------------------------------------------------------

    def links(self) -> set[str]:
        return {link["ifname"] for link in _ip_json(self.name, "link", "show")} - {"lo"}

    def pod_rules(self) -> list[dict[str, Any]]:
        return [
            r for r in _ip_json(self.name, "rule", "show") if r.get("priority") not in DEFAULT_RULE_PRIORITIES
        ]

    def main_routes(self) -> list[dict[str, Any]]:
        return _ip_json(self.name, "route", "show", "table", "main")

    def assert_clean(self) -> None:
        """Nothing of any pod is left once the runtime deleted the pod namespaces (it does so after DEL)."""
        # A DEL that had the pod's namespace leaves the host veth to go with it, as upstream does; until then
        # only veths of live pod namespaces may remain, and nothing routes to them.
        assert self.links() <= {veth for pod in self.pods if os.path.exists(pod.path) for veth in pod.veths}
        assert self.pod_rules() == []
        assert self.main_routes() == []
        assert self.allocator.allocations() == ()
        assert delqueue.pending(self.queue) == []
        self.remove_pod_namespaces()
        self.wait_no_links()

    def remove_pod_namespaces(self) -> None:
        for pod in self.pods:
            subprocess.run(["ip", "netns", "del", pod.netns], capture_output=True, check=False)

    def wait_no_links(self, timeout_s: float = 10.0) -> None:
        """The kernel destroys a deleted namespace's veths asynchronously."""
        deadline = time.monotonic() + timeout_s
        while self.links() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.links() == set()


@dataclass(frozen=True)
class CniRun:
    returncode: int
    stdout: str
    stderr: str

    def result(self) -> dict[str, Any]:
        assert self.returncode == 0, (self.stdout, self.stderr)
        value = json.loads(self.stdout)
        assert isinstance(value, dict)
        return value

    def ok(self) -> None:
        assert (self.returncode, self.stdout) == (0, ""), (self.stdout, self.stderr)

    def error(self, code: int) -> dict[str, Any]:
        assert self.returncode == 1, (self.stdout, self.stderr)
        assert "Traceback" not in self.stdout + self.stderr
        body = json.loads(self.stdout)
        assert set(body) == {"cniVersion", "code", "msg", "details"}
        assert body["code"] == code, body
        return body


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return bundle.build(tmp_path_factory.mktemp("opt-cni-bin") / "aws-cni")


@contextmanager
def _node(
    tmp_path: pathlib.Path, shim: pathlib.Path, allocator: FakeAllocator | CardAllocators, *,
    ipv6_mode: bool = False,
) -> Iterator[Node]:  # fmt: skip
    suffix = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    name = f"vpccni-cni-node{'6' if ipv6_mode else ''}-{suffix}"
    _ip("netns", "add", name)
    node_fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    state = Node(name=name, tmp=tmp_path, shim=shim, allocator=allocator, suffix=suffix)
    multi_nic = allocator if isinstance(allocator, CardAllocators) else None
    # An IPv6-mode node has IPv4 egress on: aws-cni's ADD prepares it as ipamd does.
    egress = parse_egress_netconf(_egress_conf(state, "0.4.0")) if ipv6_mode else None
    try:
        # ipamd runs in the host namespace; here its workers enter the test's node namespace instead.
        with serve_in_netns(netns_fd=node_fd, allocator=allocator, socket_path=state.socket,
                            del_queue_dir=state.queue, multi_nic=multi_nic, egress=egress):  # fmt: skip
            yield state
    finally:
        os.close(node_fd)
        for pod in state.pods:
            subprocess.run(["ip", "netns", "del", pod.netns], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def node(tmp_path: pathlib.Path, shim: pathlib.Path) -> Iterator[Node]:
    allocator = FakeAllocator(secondary_ips("10.0.1.10", 4, device_number=1, route_table=ROUTE_TABLE))
    with _node(tmp_path, shim, allocator) as state:
        yield state


@pytest.fixture
def two_card_node(tmp_path: pathlib.Path, shim: pathlib.Path) -> Iterator[Node]:
    """ENABLE_MULTI_NIC on two network cards: card 0's addresses on the primary ENI (main table), card 1's
    on its device 0 (table 10100)."""
    cards, _, _ = two_cards()
    with _node(tmp_path, shim, cards) as state:
        yield state


def _pod_view(pod: Pod) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    addrs = [f"{a['local']}/{a['prefixlen']}" for link in _ip_json(pod.netns, "addr", "show", "dev", "eth0")
             for a in link.get("addr_info", []) if a.get("family") == "inet"]  # fmt: skip
    return addrs, _ip_json(pod.netns, "route", "show"), _ip_json(pod.netns, "neigh", "show", "dev", "eth0")


# --- results per version; ADD -> CHECK -> DEL ----------------------------------------------------------


@pytest.mark.parametrize("version", versions.SUPPORTED_VERSIONS)
def test_add_check_del_in_every_version(node: Node, version: str) -> None:
    pod = node.new_pod("v" + version.replace(".", ""))
    result = node.cni("ADD", pod, node.conf(version)).result()
    assert result["cniVersion"] == version
    if versions.parse_version(version) < (0, 3, 0):
        assert result == {"cniVersion": version, "ip4": {"ip": "10.0.1.10/32"}, "dns": {}}
    else:
        host_mac = next(link["address"] for link in _ip_json(node.name, "link", "show", "dev", pod.veth))
        assert result["interfaces"] == [
            {"name": pod.veth, "mac": host_mac},
            {"name": "eth0", "sandbox": pod.path, "mac": str(ROUTE_TABLE)},
            {"name": dummy_interface_name(pod.namespace, pod.name), "mac": "0", "sandbox": "1"},
        ]
        ip = {"address": "10.0.1.10/32", "interface": 1}
        assert result["ips"] == [{**ip, "version": "4"} if versions.has_ip_version(version) else ip]
    # The real datapath: pod side and host side as upstream wires them.
    addrs, routes, neighbours = _pod_view(pod)
    assert addrs == ["10.0.1.10/32"]
    assert {(r["dst"], r.get("gateway")) for r in routes} == {
        ("default", "169.254.1.1"),
        ("169.254.1.1", None),
    }
    assert [(n["dst"], n["state"]) for n in neighbours] == [("169.254.1.1", ["PERMANENT"])]
    assert {(r["priority"], r.get("src"), r.get("dst"), r["table"]) for r in node.pod_rules()} == {
        (512, "all", "10.0.1.10", "main"),
        (1536, "10.0.1.10", None, str(ROUTE_TABLE)),
    }
    assert [r["dst"] for r in node.main_routes()] == ["10.0.1.10"]
    if version in CHECK_VERSIONS:
        node.cni("CHECK", pod, node.conf(version, prevResult=result)).ok()
    node.cni("DEL", pod, node.conf(version, prevResult=result)).ok()
    node.assert_clean()


def test_del_twice_and_del_without_add(node: Node) -> None:
    pod = node.new_pod("twice")
    result = node.cni("ADD", pod, node.conf("1.0.0")).result()
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=result)).ok()
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=result)).ok()
    stranger = node.new_pod("never")
    node.cni("DEL", stranger, node.conf("1.0.0")).ok()
    node.cni("DEL", stranger, node.conf("1.0.0"), CNI_NETNS=None).ok()
    node.assert_clean()


def test_del_leaves_the_veth_to_the_netns_and_the_same_pod_can_be_added_again(node: Node) -> None:
    pod = node.new_pod("again")
    first = node.cni("ADD", pod, node.conf("1.0.0")).result()
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=first)).ok()
    # Rules and route are gone at once; the veth goes when the runtime deletes the namespace.
    assert (node.links(), node.pod_rules(), node.main_routes()) == ({pod.veth}, [], [])
    # The runtime recreates the sandbox (same pod, new namespace) before the old one is gone: ADD replaces
    # the stale host veth of the same name.
    old_netns = pod.netns
    pod.netns = f"{old_netns}-2"
    _ip("netns", "add", pod.netns)
    node.pods.append(Pod(netns=old_netns, container_id=pod.container_id, name=pod.name))
    second = node.cni("ADD", pod, node.conf("1.0.0")).result()
    node.cni("CHECK", pod, node.conf("1.0.0", prevResult=second)).ok()
    assert {link["ifname"] for link in _ip_json(old_netns, "link", "show")} == {"lo"}
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=second)).ok()
    node.assert_clean()


def _pings(node: Node, address: str) -> bool:
    """From an address of the node (ipamd's namespace) to a pod, and back through the pod's veth."""
    _ip("-n", node.name, "link", "set", "lo", "up")
    _ip("-n", node.name, "addr", "replace", "10.0.0.5/32", "dev", "lo")
    done = subprocess.run(["ip", "netns", "exec", node.name, "busybox", "ping", "-c1", "-W2", address],
                          capture_output=True, check=False)  # fmt: skip
    return done.returncode == 0


def test_two_live_sandboxes_of_one_pod_and_a_second_interface_keep_each_others_network(node: Node) -> None:
    old = node.new_pod("sandbox")
    new = node.new_pod("recreated")
    new.name = old.name  # the same pod's next sandbox, while the first one still lives
    first = node.cni("ADD", old, node.conf("1.0.0")).result()
    second = node.cni("ADD", new, node.conf("1.0.0")).result()
    eth1 = node.cni("ADD", old, node.conf("1.0.0"), CNI_IFNAME="eth1").result()
    assert first["interfaces"][0]["name"] == old.veth
    assert second["interfaces"][0]["name"] == attachment_veth_name(new.container_id, "eth0")
    assert eth1["interfaces"][0]["name"] == host_veth_name(old.namespace, old.name, index=1)
    assert len(node.links()) == 3
    node.cni("CHECK", old, node.conf("1.0.0", prevResult=first)).ok()
    node.cni("CHECK", new, node.conf("1.0.0", prevResult=second)).ok()
    node.cni("CHECK", old, node.conf("1.0.0", prevResult=eth1), CNI_IFNAME="eth1").ok()
    addresses = [r["ips"][0]["address"].split("/")[0] for r in (first, second, eth1)]
    assert [_pings(node, a) for a in addresses] == [True, True, True], addresses
    # The pod keeps its default route on eth0; eth1 answers through its own table (169.254.1.2).
    assert [(r["dst"], r["dev"]) for r in _ip_json(old.netns, "route", "show")
            if r["dst"] == "default"] == [("default", "eth0")]  # fmt: skip
    node.cni("DEL", old, node.conf("1.0.0", prevResult=eth1), CNI_IFNAME="eth1").ok()
    node.cni("DEL", old, node.conf("1.0.0", prevResult=first), CNI_NETNS=None).ok()
    node.cni("CHECK", new, node.conf("1.0.0", prevResult=second)).ok()
    assert _pings(node, addresses[1])
    node.cni("DEL", new, node.conf("1.0.0", prevResult=second)).ok()
    node.remove_pod_namespaces()
    node.wait_no_links()
    node.assert_clean()


def test_del_without_the_netns_deletes_the_veth(node: Node) -> None:
    pod = node.new_pod("nonetns")
    result = node.cni("ADD", pod, node.conf("1.0.0")).result()
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=result), CNI_NETNS=None).ok()
    assert (node.links(), node.pod_rules(), node.main_routes()) == (set(), [], [])
    assert {link["ifname"] for link in _ip_json(pod.netns, "link", "show")} == {"lo"}
    node.assert_clean()


def test_del_after_the_netns_is_gone(node: Node) -> None:
    pod = node.new_pod("gone")
    result = node.cni("ADD", pod, node.conf("0.4.0")).result()
    _ip("netns", "del", pod.netns)
    node.cni("DEL", pod, node.conf("0.4.0", prevResult=result)).ok()
    node.assert_clean()


def test_add_twice_fails_and_leaves_the_first_intact(node: Node) -> None:
    pod = node.new_pod("dup")
    first = node.cni("ADD", pod, node.conf("1.0.0")).result()
    body = node.cni("ADD", pod, node.conf("1.0.0")).error(ErrorCode.INTERNAL)
    assert "already has interface eth0" in body["msg"]
    node.cni("CHECK", pod, node.conf("1.0.0", prevResult=first)).ok()
    assert node.allocator.free == 3
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=first)).ok()
    node.assert_clean()


def test_check_detects_drift_until_the_pod_is_recreated(node: Node) -> None:
    pod = node.new_pod("drift")
    result = node.cni("ADD", pod, node.conf("1.0.0")).result()
    _ip("-n", pod.netns, "route", "del", "default")
    body = node.cni("CHECK", pod, node.conf("1.0.0", prevResult=result)).error(ErrorCode.INTERNAL)
    assert "default" in body["msg"] and "10.0.1.10" in body["msg"]
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=result)).ok()
    again = node.cni("ADD", pod, node.conf("1.0.0")).result()
    node.cni("CHECK", pod, node.conf("1.0.0", prevResult=again)).ok()
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=again)).ok()
    node.assert_clean()


def test_gc_keeps_valid_attachments_and_collects_the_rest(node: Node) -> None:
    keep, drop = node.new_pod("keep"), node.new_pod("drop")
    kept = node.cni("ADD", keep, node.conf("1.1.0")).result()
    node.cni("ADD", drop, node.conf("1.1.0")).result()
    _ip("-n", node.name, "rule", "add", "to", "10.0.1.99/32", "lookup", "main", "priority", "512")
    valid = [{"containerID": keep.container_id, "ifname": "eth0"}]
    node.cni("GC", None, node.conf("1.1.0", **{"cni.dev/valid-attachments": valid})).ok()
    assert [a.key.container_id for a in node.allocator.allocations()] == [keep.container_id]
    assert node.links() == {keep.veth}
    assert {r.get("dst") or r.get("src") for r in node.pod_rules()} == {"10.0.1.10"}
    node.cni("CHECK", keep, node.conf("1.1.0", prevResult=kept)).ok()
    node.cni("DEL", keep, node.conf("1.1.0", prevResult=kept)).ok()
    node.cni("DEL", drop, node.conf("1.1.0")).ok()
    node.assert_clean()


def test_status_follows_the_allocator(node: Node) -> None:
    node.cni("STATUS", None, node.conf("1.1.0")).ok()
    node.allocator.ready = False
    body = node.cni("STATUS", None, node.conf("1.1.0")).error(ErrorCode.NOT_AVAILABLE)
    assert "initialisation" in body["msg"]
    node.allocator.ready = True
    pods = [node.new_pod(f"s{i}") for i in range(4)]
    results = [node.cni("ADD", p, node.conf("1.1.0")).result() for p in pods]
    body = node.cni("STATUS", None, node.conf("1.1.0")).error(ErrorCode.NOT_AVAILABLE)
    assert "maximum number of pods" in body["msg"]
    for p, r in zip(pods, results, strict=True):
        node.cni("DEL", p, node.conf("1.1.0", prevResult=r)).ok()
    node.cni("STATUS", None, node.conf("1.1.0")).ok()
    node.assert_clean()


# --- pods with one interface per network card (ENABLE_MULTI_NIC) -----------------------------------------

MULTI_NIC = {"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {MULTI_NIC_ANNOTATION: MULTI_NIC_VALUE}}}


def test_a_multi_nic_pod_gets_an_interface_per_card_and_del_removes_them_all(two_card_node: Node) -> None:
    node = two_card_node
    pod = node.new_pod("mnic")
    pod.interfaces = 2
    plain = node.new_pod("plain")
    result = node.cni("ADD", pod, node.conf("1.0.0", **MULTI_NIC)).result()
    assert [(i["name"], i.get("mac")) for i in result["interfaces"] if i.get("sandbox") == pod.path] == [
        ("eth0", "254"),
        ("mNicIf1", "10100"),
    ]
    assert [(ip["address"], ip["interface"]) for ip in result["ips"]] == [
        ("10.0.1.10/32", 1),
        ("10.0.2.10/32", 3),
    ]
    # Inside the pod: eth0 owns the default route; mNicIf1 answers from table 1 through 169.254.1.2, chosen
    # by the rule for its address (priority 1).
    assert [(r["dst"], r["dev"]) for r in _ip_json(pod.netns, "route", "show") if r["dst"] == "default"] == [
        ("default", "eth0")
    ]
    assert {
        (r["dst"], r.get("gateway"), r["dev"]) for r in _ip_json(pod.netns, "route", "show", "table", "1")
    } == {
        ("default", "169.254.1.2", "mNicIf1"),
        ("169.254.1.2", None, "mNicIf1"),
    }
    assert [(r["priority"], r["src"], r["table"]) for r in _ip_json(pod.netns, "rule", "show")
            if r["priority"] == 1] == [(1, "10.0.2.10", "1")]  # fmt: skip
    neighbours = _ip_json(pod.netns, "neigh", "show", "dev", "mNicIf1")
    assert [(n["dst"], n["state"]) for n in neighbours] == [("169.254.1.2", ["PERMANENT"])]
    # On the host: both veths, rule 512 for each address, rule 1536 into card 1's ENI table.
    assert node.links() == pod.veths
    assert {(r["priority"], r.get("src"), r.get("dst"), r["table"]) for r in node.pod_rules()} == {
        (512, "all", "10.0.1.10", "main"),
        (512, "all", "10.0.2.10", "main"),
        (1536, "10.0.2.10", None, "10100"),
    }
    assert [_pings(node, a) for a in ("10.0.1.10", "10.0.2.10")] == [True, True]
    node.cni("CHECK", pod, node.conf("1.0.0", prevResult=result, **MULTI_NIC)).ok()
    # A pod without the annotation, beside it, is served by card 0 alone.
    other = node.cni("ADD", plain, node.conf("1.0.0")).result()
    assert [ip["address"] for ip in other["ips"]] == ["10.0.1.11/32"]
    node.cni("DEL", plain, node.conf("1.0.0", prevResult=other)).ok()
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=result, **MULTI_NIC)).ok()
    node.assert_clean()


def test_a_multi_nic_add_that_fails_on_one_interface_leaves_nothing(two_card_node: Node) -> None:
    node = two_card_node
    pod = node.new_pod("clash")
    # Something already holds the name the second interface needs inside the pod.
    _ip("-n", pod.netns, "link", "add", "mNicIf1", "type", "veth", "peer", "name", "squatter")
    body = node.cni("ADD", pod, node.conf("1.0.0", **MULTI_NIC)).error(ErrorCode.INTERNAL)
    assert "mNicIf1" in body["msg"] and "pod-clash" in body["msg"]
    assert {link["ifname"] for link in _ip_json(pod.netns, "link", "show")} == {"lo", "mNicIf1", "squatter"}
    assert (node.pod_rules(), node.main_routes(), node.allocator.allocations()) == ([], [], ())
    _ip("-n", pod.netns, "link", "del", "mNicIf1")
    result = node.cni("ADD", pod, node.conf("1.0.0", **MULTI_NIC)).result()  # the runtime's retry
    pod.interfaces = 2
    node.cni("DEL", pod, node.conf("1.0.0", prevResult=result, **MULTI_NIC), CNI_NETNS=None).ok()
    node.assert_clean()


# --- every error code from crafted input; none leaves state behind -------------------------------------


@pytest.mark.parametrize(
    ("code", "conf", "env"),
    [
        (ErrorCode.INCOMPATIBLE_CNI_VERSION, {"cniVersion": "9.9.9"}, {}),
        (ErrorCode.UNSUPPORTED_FIELD, {"runtimeConfig": {"ips": ["10.0.1.50/32"]}}, {}),
        (ErrorCode.INVALID_ENVIRONMENT_VARIABLES, {}, {"CNI_IFNAME": None}),
        (ErrorCode.INVALID_ENVIRONMENT_VARIABLES, {}, {"CNI_ARGS": "K8S_POD_NAME"}),
        (ErrorCode.INVALID_ENVIRONMENT_VARIABLES, {}, {"CNI_NETNS": "/run/netns/does-not-exist"}),
        # passes the shim's check (a namespace file), refused by ipamd: not a network namespace
        (ErrorCode.INVALID_ENVIRONMENT_VARIABLES, {}, {"CNI_NETNS": "/proc/self/ns/uts"}),
        (ErrorCode.DECODING_FAILURE, b'{"cniVersion": "1.0.0", ', {}),
        (ErrorCode.INVALID_NETWORK_CONFIG, {"vethPrefix": "toolong"}, {}),
        (ErrorCode.INVALID_NETWORK_CONFIG, {"name": "bad name"}, {}),
    ],
)
def test_error_codes_from_bad_input(node: Node, code: int, conf: Any, env: dict[str, str | None]) -> None:
    pod = node.new_pod("bad")
    data = conf if isinstance(conf, bytes) else node.conf("1.0.0", **conf)
    node.cni("ADD", pod, data, **env).error(code)
    node.assert_clean()


def test_try_again_later_when_the_pool_is_growing_or_ipamd_is_down(node: Node) -> None:
    node.allocator.ready = False
    pod = node.new_pod("later")
    assert "not ready" in node.cni("ADD", pod, node.conf("1.0.0")).error(ErrorCode.TRY_AGAIN_LATER)["msg"]
    node.allocator.ready = True
    gone = node.conf("1.0.0", cniSocket=str(node.tmp / "nothing-here.sock"))
    body = node.cni("ADD", pod, gone).error(ErrorCode.TRY_AGAIN_LATER)
    assert "is aws-node running?" in body["msg"]
    node.assert_clean()


def test_del_while_ipamd_is_down_is_finished_by_the_drain(node: Node) -> None:
    pod = node.new_pod("queued")
    result = node.cni("ADD", pod, node.conf("0.4.0")).result()
    down = node.conf("0.4.0", cniSocket=str(node.tmp / "down.sock"), prevResult=result)
    node.cni("DEL", pod, down).ok()
    assert len(delqueue.pending(node.queue)) == 1
    assert node.links() == {pod.veth}  # nothing torn down yet: that is ipamd's job
    with _restarted_ipamd(node) as delete_queued:
        report = drain_del_queue(node.queue, delete_queued)
    assert (report.done, report.failed) == (1, 0)
    node.assert_clean()


@contextmanager
def _restarted_ipamd(node: Node) -> Iterator[Callable[[Request], None]]:
    """Another service on the same node and allocator, as after an ipamd restart, for draining the queue."""
    node_fd = os.open(f"/run/netns/{node.name}", os.O_RDONLY)
    host = run_in_netns(node_fd, open_netlink)
    try:
        service = CniService(
            allocator=node.allocator, network=PodWiring(host=host, namespaces=ThreadNetnsNetlink())
        )
        yield lambda request: run_in_netns(node_fd, lambda: service.delete_queued(request))
    finally:
        host.close()
        os.close(node_fd)


def test_concurrent_adds_of_different_pods(node: Node) -> None:
    pods = [node.new_pod(f"c{i}") for i in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda p: node.cni("ADD", p, node.conf("1.0.0")).result(), pods))
    assert sorted(IPv4Address(r["ips"][0]["address"].split("/")[0]) for r in results) == [
        IPv4Address("10.0.1.10") + i for i in range(3)
    ]
    assert node.links() == {p.veth for p in pods}
    for p, r in zip(pods, results, strict=True):
        node.cni("DEL", p, node.conf("1.0.0", prevResult=r)).ok()
    node.assert_clean()


def test_exhausted_pool_that_may_grow_is_11_and_one_that_cannot_is_999(node: Node) -> None:
    pods = [node.new_pod(f"e{i}") for i in range(5)]
    results = [node.cni("ADD", p, node.conf("1.0.0")).result() for p in pods[:4]]
    node.allocator.exhausted_state = GrowthState.AT_MAX_PODS
    body = node.cni("ADD", pods[4], node.conf("1.0.0")).error(ErrorCode.INTERNAL)
    assert "maximum number of pods" in body["msg"]
    node.allocator.exhausted_state = GrowthState.GROWING
    node.cni("ADD", pods[4], node.conf("1.0.0")).error(ErrorCode.TRY_AGAIN_LATER)
    for p, r in zip(pods, results, strict=False):
        node.cni("DEL", p, node.conf("1.0.0", prevResult=r)).ok()
    node.assert_clean()


# --- IPv6 pods, and egress-cni chained after aws-cni -------------------------------------------------------


@pytest.fixture
def node6(tmp_path: pathlib.Path, shim: pathlib.Path) -> Iterator[Node]:
    """A node in IPv6 mode: /128s of the primary ENI's /80 (main table), IPv4 egress through egress-cni."""
    allocator = FakeAllocator(secondary_ips("2001:db8:0:100:1::", 4, device_number=0, route_table=254))
    with _node(tmp_path, shim, allocator, ipv6_mode=True) as state:
        yield state


def _egress_conf(node: Node, version: str, **extra: Any) -> dict[str, Any]:
    """egress-cni's conflist entry as libcni hands it over (the network's name, cniVersion injected)."""
    entry = {
        "type": "egress-cni", "enabled": "true", "randomizeSNAT": "prng", "nodeIP": "10.0.0.5",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "169.254.172.0/22"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(node.tmp / "egress-ipam")},
    }  # fmt: skip
    return node.conf(version, **{**entry, **extra})


def _egress_reserved(node: Node) -> list[str]:
    store = node.tmp / "egress-ipam" / "aws-cni"
    return sorted(p.name for p in store.iterdir() if p.name[0].isdigit()) if store.exists() else []


CHAIN_VERSIONS = [v for v in versions.SUPPORTED_VERSIONS if versions.parse_version(v) >= (0, 3, 0)]


@pytest.mark.parametrize("version", versions.SUPPORTED_VERSIONS)
def test_ipv6_pod_results_and_wiring_in_every_version(node6: Node, version: str) -> None:
    pod = node6.new_pod("six" + version.replace(".", ""))
    result = node6.cni("ADD", pod, node6.conf(version)).result()
    if versions.parse_version(version) < (0, 3, 0):
        assert result == {"cniVersion": version, "ip6": {"ip": "2001:db8:0:100:1::/128"}, "dns": {}}
    else:
        ip = {"address": "2001:db8:0:100:1::/128", "interface": 1}
        assert result["ips"] == [{**ip, "version": "6"} if versions.has_ip_version(version) else ip]
        assert result["interfaces"][1] == {"name": "eth0", "sandbox": pod.path, "mac": "254"}
    addrs = [f"{a['local']}/{a['prefixlen']}" for link in _ip_json(pod.netns, "addr", "show", "dev", "eth0")
             for a in link.get("addr_info", [])
             if a.get("family") == "inet6" and a["scope"] == "global"]  # fmt: skip
    assert addrs == ["2001:db8:0:100:1::/128"]
    routes = {(r["dst"], r.get("gateway")) for r in _ip_json(pod.netns, "-6", "route", "show")}
    assert {("default", "fe80::1"), ("fe80::1", None)} <= routes
    neighbours = _ip_json(pod.netns, "-6", "neigh", "show", "dev", "eth0")
    assert [(n["dst"], n["state"]) for n in neighbours] == [("fe80::1", ["PERMANENT"])]
    rules = _ip_json(node6.name, "-6", "rule", "show")
    assert [(r["priority"], r.get("dst")) for r in rules if r["priority"] == 512] == [
        (512, "2001:db8:0:100:1::")
    ]
    assert [r["dst"] for r in _ip_json(node6.name, "-6", "route", "show", "table", "main")
            if r["dst"].startswith("2001:")] == ["2001:db8:0:100:1::"]  # fmt: skip
    if version in CHECK_VERSIONS:
        node6.cni("CHECK", pod, node6.conf(version, prevResult=result)).ok()
    # A conflist without egress-cni: the egress is wired and listed all the same (the node has it on).
    listed = [i["name"] for i in result.get("interfaces", [])[3:]]
    assert len(listed) == (2 if versions.has_interfaces(version) else 0) and listed[1:] in ([], ["v4if0"])
    assert len(_egress_reserved(node6)) == len(listed) // 2
    node6.cni("DEL", pod, node6.conf(version, prevResult=result)).ok()
    assert _ip_json(node6.name, "-6", "rule", "show") == [r for r in rules if r["priority"] != 512]
    assert node6.allocator.allocations() == ()
    # aws-cni's ADD wired the pod's egress from 0.3.0 on (the node has it on); its DEL took it back.
    assert _egress_reserved(node6) == []


@pytest.mark.parametrize("version", CHAIN_VERSIONS)
def test_egress_cni_chained_after_aws_cni_in_every_version(node6: Node, version: str) -> None:
    pod = node6.new_pod("egr" + version.replace(".", ""))
    # The node has egress on: aws-cni's ADD wires it and lists it after its own three interfaces, and
    # egress-cni's ADD answers with its prevResult (the shim alone: ipamd is not asked).
    first = node6.cni("ADD", pod, node6.conf(version)).result()
    final = node6.cni("ADD", pod, _egress_conf(node6, version, prevResult=first)).result()
    assert final == first and final["cniVersion"] == version, "egress-cni adds no address"
    host, container = final["interfaces"][3:]
    assert host["name"].startswith("egr") and "sandbox" not in host
    assert (container["name"], container["sandbox"]) == ("v4if0", pod.path)
    link = _ip_json(pod.netns, "addr", "show", "dev", "v4if0")[0]
    assert link["address"] == container["mac"]
    assert [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"] == [
        "169.254.172.2/32"
    ]
    assert {(r["dst"], r.get("gateway")) for r in _ip_json(pod.netns, "-4", "route", "show")} == {
        ("default", "169.254.172.1"),
        ("169.254.172.1", None),
    }
    assert _egress_reserved(node6) == ["169.254.172.2"]
    if version in CHECK_VERSIONS:
        node6.cni("CHECK", pod, _egress_conf(node6, version, prevResult=final)).ok()
        node6.cni("CHECK", pod, node6.conf(version, prevResult=final)).ok()
    # libcni deletes in reverse order, each plugin with the chain's final result
    node6.cni("DEL", pod, _egress_conf(node6, version, prevResult=final)).ok()
    node6.cni("DEL", pod, _egress_conf(node6, version, prevResult=final)).ok()
    node6.cni("DEL", pod, node6.conf(version, prevResult=final)).ok()
    assert _egress_reserved(node6) == [] and node6.allocator.allocations() == ()
    assert not [r for r in _ip_json(node6.name, "-4", "route", "show") if r["dst"].startswith("169.254.172")]


def test_egress_cni_errors_are_cni_errors(node6: Node) -> None:
    pod = node6.new_pod("egrerr")
    node6.cni("ADD", pod, _egress_conf(node6, "0.4.0")).error(ErrorCode.INVALID_NETWORK_CONFIG)
    node6.cni("ADD", pod, _egress_conf(node6, "0.4.0", nodeIP="nope", prevResult={})).error(
        ErrorCode.INVALID_NETWORK_CONFIG
    )
    disabled = node6.cni("ADD", pod, _egress_conf(node6, "0.4.0", enabled="false", prevResult={
        "cniVersion": "0.4.0", "ips": [{"version": "6", "address": "2001:db8::9/128"}]}))  # fmt: skip
    assert disabled.result()["ips"] == [{"version": "6", "address": "2001:db8::9/128"}], "passed through"
    node6.cni("DEL", pod, _egress_conf(node6, "0.4.0")).ok()  # nothing added: DEL still succeeds
