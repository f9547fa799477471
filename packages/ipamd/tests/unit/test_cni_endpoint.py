"""The CNI endpoint's server: real Unix socket, wire protocol and fd passing, fakes behind the service."""

from __future__ import annotations

import os
import pathlib
import socket
import stat

import pytest
from vpccni.cniplugin import delqueue, wire
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.version import VERSION
from vpccni.ipamd.cni.delqueue_drain import drain_del_queue
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.cni.server import CniEndpoint, EndpointSettings
from vpccni.ipamd.cni.service import CniService
from vpccni.ipamd.cni.testing import FakeAllocator, FakePodNetwork, secondary_ips


class RecordingNetwork(FakePodNetwork):
    """Also records the identity of the netns fd each wiring received."""

    def __init__(self) -> None:
        super().__init__()
        self.fd_identities: list[tuple[int, int]] = []

    def wire(self, netns_fd, spec):
        st = os.fstat(netns_fd)
        self.fd_identities.append((st.st_dev, st.st_ino))
        return super().wire(netns_fd, spec)


@pytest.fixture
def parts(tmp_path: pathlib.Path):
    allocator = FakeAllocator(secondary_ips("10.0.1.10", 4))
    network = RecordingNetwork()
    service = CniService(allocator=allocator, network=network, classify_netns=lambda fd: NetnsKind.POD)
    settings = EndpointSettings(
        socket_path=str(tmp_path / "run" / "cni.sock"), del_queue_dir=str(tmp_path / "queue"),
        allowed_uids=frozenset({os.getuid()}),
    )  # fmt: skip
    netns = tmp_path / "netns"
    netns.write_text("")
    return allocator, network, service, settings, netns


def _request(command: str, container: str = "c1", **extra) -> wire.Request:
    return wire.Request(
        version=VERSION, command=command, container_id=container, ifname="eth0", netns_path="/n",
        k8s_args=K8sArgs(pod_name="p", pod_namespace="ns"),
        netconf={"cniVersion": "1.1.0", "name": "aws-cni"}, cni_version="1.1.0", **extra,
    )  # fmt: skip


def test_add_over_the_socket_with_the_fd(parts) -> None:
    allocator, network, service, settings, netns = parts
    with CniEndpoint(service=service, settings=settings):
        assert stat.S_IMODE(os.stat(settings.socket_path).st_mode) == 0o660
        fd = os.open(netns, os.O_RDONLY)
        try:
            result = wire.call(settings.socket_path, _request("ADD", has_netns_fd=True), fd)
        finally:
            os.close(fd)
        assert wire.call(settings.socket_path, _request("DEL"), None) is None
    assert isinstance(result, dict) and result["ips"] == [{"address": "10.0.1.10/32", "interface": 1}]
    st = os.stat(netns)
    assert network.fd_identities == [(st.st_dev, st.st_ino)]
    assert allocator.allocations() == ()
    assert not os.path.exists(settings.socket_path)


def test_errors_travel_back(parts) -> None:
    _, _, service, settings, _ = parts
    with CniEndpoint(service=service, settings=settings), pytest.raises(CNIError) as info:
        wire.call(settings.socket_path, _request("ADD"), None)
    assert info.value.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES and "CNI_NETNS" in info.value.msg


def test_peers_with_other_uids_are_refused(parts, tmp_path: pathlib.Path) -> None:
    _allocator, _, service, settings, _ = parts
    strict = EndpointSettings(socket_path=settings.socket_path, del_queue_dir=settings.del_queue_dir,
                              allowed_uids=frozenset({os.getuid() + 4242}))  # fmt: skip
    with CniEndpoint(service=service, settings=strict), pytest.raises(CNIError) as info:
        wire.call(settings.socket_path, _request("STATUS"), None)
    assert info.value.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES and "may not use" in info.value.msg


def test_a_garbage_client_does_not_hurt_the_server(parts) -> None:
    _, _, service, settings, _ = parts
    with CniEndpoint(service=service, settings=settings):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(settings.socket_path)
            s.sendall(b"\xff\xff\xff\xffgarbage")
            s.shutdown(socket.SHUT_WR)
            try:
                closed = s.recv(10) == b""
            except ConnectionResetError:  # closed with our garbage unread
                closed = True
            assert closed
        assert wire.call(settings.socket_path, _request("STATUS"), None) is None


def test_queued_dels_are_drained_before_serving(parts) -> None:
    allocator, network, service, settings, netns = parts
    fd = os.open(netns, os.O_RDONLY)
    try:
        service.handle(_request("ADD", has_netns_fd=True), fd)
    finally:
        os.close(fd)
    delqueue.enqueue(settings.del_queue_dir, _request("DEL"))
    with CniEndpoint(service=service, settings=settings):
        assert allocator.allocations() == ()
        assert delqueue.pending(settings.del_queue_dir) == []
    assert len(network.unwired) == 1


def test_a_failing_queued_del_is_kept(parts) -> None:
    _, _network, service, settings, _ = parts
    delqueue.enqueue(settings.del_queue_dir, _request("DEL"))
    delqueue.enqueue(settings.del_queue_dir, _request("DEL", container="c2"))

    def handler(request: wire.Request) -> None:
        if request.container_id == "c2":
            raise CNIError(ErrorCode.TRY_AGAIN_LATER, "netlink busy")
        service.delete_queued(request)

    report = drain_del_queue(settings.del_queue_dir, handler)
    assert (report.done, report.failed) == (1, 1)
    (left,) = list(delqueue.drain(settings.del_queue_dir))
    assert left.request.container_id == "c2"


def test_a_queued_del_that_can_never_succeed_is_set_aside(parts) -> None:
    _, _, service, settings, _ = parts
    bad = wire.Request(
        version=VERSION, command="DEL", container_id="c9", ifname="eth0",
        netconf={"cniVersion": "9.9.9", "name": "aws-cni"}, cni_version="9.9.9",
    )  # fmt: skip
    delqueue.enqueue(settings.del_queue_dir, bad)
    delqueue.enqueue(settings.del_queue_dir, _request("DEL"))
    report = drain_del_queue(settings.del_queue_dir, service.delete_queued)
    assert (report.done, report.failed, report.rejected) == (1, 0, 1)
    assert delqueue.pending(settings.del_queue_dir) == []
    names = os.listdir(settings.del_queue_dir)
    assert len(names) == 1 and names[0].endswith(delqueue.REJECTED_SUFFIX)


def test_dels_queued_while_serving_are_drained_soon(parts) -> None:
    allocator, _, service, settings, netns = parts
    fast = settings  # the default redrain interval: every 5 s while serving
    assert fast.redrain_interval_s <= 5.0
    with CniEndpoint(service=service, settings=fast):
        fd = os.open(netns, os.O_RDONLY)
        try:
            wire.call(fast.socket_path, _request("ADD", has_netns_fd=True), fd)
        finally:
            os.close(fd)
        # a shim that found ipamd busy or restarting queued its DEL on disk
        delqueue.enqueue(settings.del_queue_dir, _request("DEL"))
        import time

        deadline = time.monotonic() + 10
        while allocator.allocations() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert allocator.allocations() == ()
        assert delqueue.pending(settings.del_queue_dir) == []


def test_stale_socket_is_replaced_but_other_files_are_not(parts) -> None:
    _, _, service, settings, _ = parts
    os.makedirs(os.path.dirname(settings.socket_path))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(settings.socket_path)
    stale.close()
    with CniEndpoint(service=service, settings=settings):
        assert wire.call(settings.socket_path, _request("STATUS"), None) is None
    pathlib.Path(settings.socket_path).write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        CniEndpoint(service=service, settings=settings).start()
