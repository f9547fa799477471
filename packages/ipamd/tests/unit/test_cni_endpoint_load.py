"""The CNI endpoint under hostile and unlucky load: idle and slow clients, a full queue, callers that gave
up, answers that cannot be delivered, and a stop with all of that going on. Real Unix sockets, the real
shim-side client (``wire.call``), fakes behind the service.

Time bounds here are liveness bounds with wide slack (a request must complete before its own deadline), not
performance measurements: those are in ``nox -s chaos``.
"""

from __future__ import annotations

import os
import pathlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from vpccni.cniplugin import wire
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.version import VERSION
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.cni.server import CniEndpoint, EndpointSettings
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, FakePodNetwork, secondary_ips


class GatedNetwork(FakePodNetwork):
    """Wiring waits at a gate the test opens, and says when it got there."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def wire(self, netns_fd, spec):
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return super().wire(netns_fd, spec)


@pytest.fixture
def world(tmp_path: pathlib.Path):
    allocator = FakeAllocator(secondary_ips("10.0.1.10", 8))
    network = GatedNetwork()
    service = CniService(allocator=allocator, network=network, classify_netns=lambda fd: NetnsKind.POD)
    netns = tmp_path / "netns"
    netns.write_text("")
    yield allocator, network, service, tmp_path, netns
    network.gate.set()


def _settings(tmp_path: pathlib.Path, **overrides) -> EndpointSettings:
    return EndpointSettings(
        socket_path=str(tmp_path / "run" / "cni.sock"), del_queue_dir=str(tmp_path / "queue"),
        allowed_uids=frozenset({os.getuid()}), **overrides,
    )  # fmt: skip


def _request(command: str, container: str = "c1", **extra) -> wire.Request:
    return wire.Request(
        version=VERSION, command=command, container_id=container, ifname="eth0", netns_path="/n",
        k8s_args=K8sArgs(pod_name=f"p-{container}", pod_namespace="ns"),
        netconf={"cniVersion": "1.1.0", "name": "aws-cni"}, cni_version="1.1.0", **extra,
    )  # fmt: skip


def _add(path: str, netns: pathlib.Path, container: str, *, timeout_s: float = 20.0) -> object:
    fd = os.open(netns, os.O_RDONLY)
    try:
        return wire.call(path, _request("ADD", container, has_netns_fd=True, timeout_s=timeout_s), fd)
    finally:
        os.close(fd)


def _in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@contextmanager
def _idle_clients(path: str, count: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        clients = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            s.connect(path)
            clients.append(s)
        yield clients


def _closed_by_server(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_slow_clients_never_hold_a_worker(world) -> None:
    allocator, network, service, tmp_path, netns = world
    network.gate.set()
    settings = _settings(tmp_path, workers=2)
    stop_trickle = threading.Event()

    def trickle(s: socket.socket) -> None:
        # a frame header announcing 100 bytes, then one byte now and then: never a whole request
        s.sendall((100).to_bytes(4, "big"))
        while not stop_trickle.wait(0.2):
            try:
                s.sendall(b"x")
            except OSError:
                return

    with (
        CniEndpoint(service=service, settings=settings) as endpoint,
        _idle_clients(endpoint.socket_path, 300),
        _idle_clients(endpoint.socket_path, 8) as slow,
    ):
        for s in slow:
            threading.Thread(target=trickle, args=(s,), daemon=True).start()
        # Before: 2 workers each stuck reading a slow client for 10 s per recv; this ADD timed out.
        result = _add(endpoint.socket_path, netns, "real", timeout_s=4.0)
        assert wire.call(endpoint.socket_path, _request("STATUS", timeout_s=4.0), None) is None
        stop_trickle.set()
    assert isinstance(result, dict) and result["ips"][0]["address"] == "10.0.1.10/32"
    assert allocator.lookup(network="aws-cni", container_id="real", ifname="eth0") is not None


def test_a_connection_without_its_request_in_time_is_closed(world) -> None:
    _, _, service, tmp_path, _ = world
    settings = _settings(tmp_path, read_timeout_s=0.3)
    with (
        CniEndpoint(service=service, settings=settings) as endpoint,
        _idle_clients(endpoint.socket_path, 3) as idle,
    ):
        idle[0].sendall(b"\x00\x00")  # half a header
        assert all(_closed_by_server(s, within_s=10.0) for s in idle)


def test_beyond_max_reading_the_oldest_connections_go_first(world) -> None:
    _, _, service, tmp_path, _ = world
    settings = _settings(tmp_path, max_reading=5, read_timeout_s=60.0)
    with (
        CniEndpoint(service=service, settings=settings) as endpoint,
        _idle_clients(endpoint.socket_path, 10) as idle,
    ):
        assert all(_closed_by_server(s, within_s=10.0) for s in idle[:5])
        assert not any(_closed_by_server(s, within_s=0.3) for s in idle[5:])


def test_a_full_queue_answers_try_again_later(world) -> None:
    _, network, service, tmp_path, netns = world
    settings = _settings(tmp_path, workers=1, max_queued=1)
    with CniEndpoint(service=service, settings=settings) as endpoint:
        first, _ = _in_thread(_add, endpoint.socket_path, netns, "busy")
        assert network.entered.wait(10)
        queued, queued_out = _in_thread(_add, endpoint.socket_path, netns, "queued")
        deadline = time.monotonic() + 10
        while endpoint.queued < 1:
            assert time.monotonic() < deadline, "the second request never reached the queue"
            time.sleep(0.02)
        with pytest.raises(CNIError) as refused:
            _add(endpoint.socket_path, netns, "third")
        assert refused.value.code == ErrorCode.TRY_AGAIN_LATER and "overloaded" in refused.value.msg
        network.gate.set()
        first.join(10)
        queued.join(10)
    assert "value" in queued_out


def test_a_request_whose_deadline_passed_in_the_queue_is_dropped(world) -> None:
    allocator, network, service, tmp_path, netns = world
    settings = _settings(tmp_path, workers=1, answer_margin_s=2.0)
    with CniEndpoint(service=service, settings=settings) as endpoint:
        first, _ = _in_thread(_add, endpoint.socket_path, netns, "busy")
        assert network.entered.wait(10)
        # answer due 0.5 s after its accept: long gone by the time the only worker is free
        late, late_out = _in_thread(_add, endpoint.socket_path, netns, "late", timeout_s=2.5)
        late.join(10)
        network.gate.set()
        first.join(10)
        time.sleep(0.2)
        assert endpoint.dropped == 1
    assert isinstance(late_out.get("error"), wire.NoAnswer)
    assert allocator.lookup(network="aws-cni", container_id="late", ifname="eth0") is None


def test_a_request_whose_caller_left_is_dropped(world) -> None:
    allocator, network, service, tmp_path, netns = world
    settings = _settings(tmp_path, workers=1)
    with CniEndpoint(service=service, settings=settings) as endpoint:
        first, _ = _in_thread(_add, endpoint.socket_path, netns, "busy")
        assert network.entered.wait(10)
        frame = wire.encode(_request("ADD", "gone").to_dict())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(endpoint.socket_path)
            s.sendall(frame)  # no fd: the request is complete; then the caller gives up
        time.sleep(0.3)
        network.gate.set()
        first.join(10)
        deadline = time.monotonic() + 10
        while endpoint.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert endpoint.dropped == 1
    assert allocator.lookup(network="aws-cni", container_id="gone", ifname="eth0") is None


def test_an_add_whose_answer_cannot_be_delivered_is_rolled_back(world) -> None:
    allocator, network, service, tmp_path, netns = world
    with CniEndpoint(service=service, settings=_settings(tmp_path)) as endpoint:
        fd = os.open(netns, os.O_RDONLY)
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(endpoint.socket_path)
            frame = wire.encode(_request("ADD", "orphan", has_netns_fd=True).to_dict())
            sent = s.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))])
            assert sent == len(frame)
        finally:
            os.close(fd)
        assert network.entered.wait(10)
        s.close()  # the shim timed out while the pod was being wired
        network.gate.set()
        deadline = time.monotonic() + 10
        while allocator.lookup(network="aws-cni", container_id="orphan", ifname="eth0") is not None:
            assert time.monotonic() < deadline, "the undelivered ADD was not rolled back"
            time.sleep(0.05)
    assert network.wired == {}
    assert [(key.container_id, reason) for key, reason in allocator.released] == [("orphan", "PodDeleted")]


def test_stop_is_bounded_with_idle_clients_waiting_requests_and_a_stuck_one(world) -> None:
    _, network, service, tmp_path, netns = world
    settings = _settings(tmp_path, workers=1, stop_grace_s=0.5)
    endpoint = CniEndpoint(service=service, settings=settings)
    endpoint.start()
    with _idle_clients(endpoint.socket_path, 100):
        stuck, _ = _in_thread(_add, endpoint.socket_path, netns, "stuck")
        assert network.entered.wait(10)
        waiting, waiting_out = _in_thread(_add, endpoint.socket_path, netns, "waiting")
        time.sleep(0.3)
        stopper, _ = _in_thread(endpoint.stop)
        stopper.join(10)
        assert not stopper.is_alive(), "stop() did not return with a request stuck"
        waiting.join(10)
    assert isinstance(waiting_out.get("error"), wire.WireError)  # the shim queues a DEL / answers 11
    assert not os.path.exists(settings.socket_path)
    network.gate.set()
    stuck.join(10)


def test_adds_queued_for_a_busy_worker_are_reported_as_demand(world) -> None:
    _, network, service, tmp_path, netns = world
    queued: list[int] = []
    settings = _settings(tmp_path, workers=1)
    with CniEndpoint(service=service, settings=settings, on_add_queued=queued.append) as endpoint:
        first, _ = _in_thread(_add, endpoint.socket_path, netns, "busy")
        assert network.entered.wait(10)
        waiting = [_in_thread(_add, endpoint.socket_path, netns, f"q{n}")[0] for n in range(3)]
        deadline = time.monotonic() + 10
        while endpoint.queued < 3:
            assert time.monotonic() < deadline, "the ADDs never reached the queue"
            time.sleep(0.02)
        # the worker holds one ADD, three wait for it: the pool hears of all four (it grows for them)
        assert sum(queued) == 3 and queued.count(1) == 4
        network.gate.set()
        for thread in (first, *waiting):
            thread.join(10)
    assert sum(queued) == 0 and queued.count(-1) == 4
