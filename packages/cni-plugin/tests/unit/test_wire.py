"""The shim <-> ipamd wire protocol: framing, fd passing, bounds, peer credentials, timeouts."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import threading

import pytest
from vpccni.cniplugin import wire
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.testing import FakeEndpoint

REQUEST = wire.Request(
    version="0.1.0", command="ADD", container_id="c1", ifname="eth0", netns_path="/var/run/netns/p",
    has_netns_fd=True, k8s_args=K8sArgs(pod_name="web", pod_namespace="default"),
    netconf={"name": "aws-cni", "cniVersion": "1.0.0"}, cni_version="1.0.0",
)  # fmt: skip


def test_request_round_trips_through_json() -> None:
    assert wire.Request.from_dict(json.loads(json.dumps(REQUEST.to_dict()))) == REQUEST


def test_fd_arrives_and_is_the_same_file(tmp_path: pathlib.Path) -> None:
    netns = tmp_path / "netns"
    netns.write_text("")
    with FakeEndpoint(str(tmp_path / "cni.sock"), lambda r, fd: {"got": r.container_id}) as endpoint:
        fd = os.open(netns, os.O_RDONLY)
        try:
            assert wire.call(endpoint.path, REQUEST, fd) == {"got": "c1"}
        finally:
            os.close(fd)
    st = os.stat(netns)
    (received,) = endpoint.received
    assert received.fd_identity == (st.st_dev, st.st_ino)
    assert received.request == REQUEST
    assert received.peer == (os.getpid(), os.getuid(), os.getgid())


def test_error_answer_becomes_cnierror(tmp_path: pathlib.Path) -> None:
    def refuse(request: wire.Request, fd: int | None) -> object:
        raise CNIError(ErrorCode.TRY_AGAIN_LATER, "no free address", "pool empty")

    with FakeEndpoint(str(tmp_path / "cni.sock"), refuse) as endpoint, pytest.raises(CNIError) as info:
        wire.call(endpoint.path, wire.Request(version="0.1.0", command="STATUS"), None)
    assert (info.value.code, info.value.msg, info.value.details) == (11, "no free address", "pool empty")


def test_unreachable_when_nothing_listens(tmp_path: pathlib.Path) -> None:
    with pytest.raises(wire.Unreachable) as info:
        wire.call(str(tmp_path / "missing.sock"), REQUEST, None)
    assert "is aws-node running?" in str(info.value)
    assert "missing.sock" in str(info.value)


def _serve_once(path: str, behaviour) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            behaviour(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # closes without answering
        (5).to_bytes(4, "big") + b"{bad",  # truncated
        (wire.MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"),  # oversized announcement
        (4).to_bytes(4, "big") + b"null",  # neither ok nor error
    ],
)
def test_broken_answers_are_no_answer(tmp_path: pathlib.Path, reply: bytes) -> None:
    path = str(tmp_path / "s.sock")

    def answer(conn: socket.socket) -> None:
        wire.recv_request(conn)
        conn.sendall(reply)

    thread = _serve_once(path, answer)
    with pytest.raises(wire.NoAnswer):
        wire.call(path, wire.Request(version="0.1.0", command="STATUS"), None)
    thread.join(5)


def test_silent_server_times_out(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "s.sock")
    done = threading.Event()
    thread = _serve_once(path, lambda conn: done.wait(5))
    with pytest.raises(wire.NoAnswer) as info:
        wire.call(path, wire.Request(version="0.1.0", command="STATUS"), None, timeout_s=0.2)
    done.set()
    thread.join(5)
    assert "timed out" in str(info.value)


def _raw_exchange(frames: list[bytes], fds: list[int] | None = None) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if fds:
        socket.send_fds(a, [frames[0]], fds)
        frames = frames[1:]
    for frame in frames:
        a.sendall(frame)
    a.shutdown(socket.SHUT_WR)
    b.settimeout(2)
    return a, b


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ((wire.MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"), wire.WireError),
        ((10).to_bytes(4, "big") + b"{}", wire.WireError),
        ((3).to_bytes(4, "big") + b"{x}", wire.WireError),
        (b"", wire.WireError),
        (wire.encode([1, 2]), CNIError),
        (wire.encode({**REQUEST.to_dict(), "command": "VERSION"}), CNIError),
        (wire.encode({**REQUEST.to_dict(), "containerID": "../etc"}), CNIError),
        (wire.encode({**REQUEST.to_dict(), "timeoutS": 1e9}), CNIError),
        (wire.encode({**REQUEST.to_dict(), "args": {"K8S_POD_NAME": 7}}), CNIError),
        (wire.encode(REQUEST.to_dict()), CNIError),  # says netnsFd but none came
    ],
)
def test_server_rejects_malformed_requests(payload: bytes, error: type[Exception]) -> None:
    a, b = _raw_exchange([payload])
    with a, b, pytest.raises(error):
        wire.recv_request(b)


def test_server_closes_an_unexpected_fd(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "f"
    target.write_text("")
    fd = os.open(target, os.O_RDONLY)
    before = len(os.listdir("/proc/self/fd"))
    no_fd = wire.encode({**REQUEST.to_dict(), "netnsFd": False})
    a, b = _raw_exchange([no_fd], [fd])
    os.close(fd)
    with a, b, pytest.raises(CNIError):
        wire.recv_request(b)
    assert len(os.listdir("/proc/self/fd")) == before - 1


def test_oversized_request_is_refused_by_the_sender() -> None:
    big = wire.Request(version="0.1.0", command="STATUS", netconf={"pad": "x" * wire.MAX_MESSAGE_BYTES})
    with pytest.raises(wire.WireError):
        wire.encode(big.to_dict())


def test_peer_credentials_of_a_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert wire.peer_credentials(b) == (os.getpid(), os.getuid(), os.getgid())


def _full_backlog(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A listener nobody accepts on, its backlog filled by idle connections."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    idle = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return listener, idle
        idle.append(s)


def test_a_full_backlog_is_waited_out_within_the_connect_timeout(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "busy.sock")
    listener, idle = _full_backlog(path)

    def answer_later() -> None:
        import time

        time.sleep(0.3)  # the backlog frees up once ipamd accepts again
        for _ in range(len(idle) + 1):
            conn, _ = listener.accept()
            conn.settimeout(5)
            try:
                request, _fd = wire.recv_request(conn)
                wire.send_ok(conn, {"got": request.command})
            except wire.WireError:
                pass  # one of the idle connections
            finally:
                conn.close()

    threading.Thread(target=answer_later, daemon=True).start()
    try:
        for s in idle:
            s.close()  # they stay queued in the backlog until accepted
        assert wire.call(path, wire.Request(version="0.1.0", command="STATUS"), None) == {"got": "STATUS"}
    finally:
        listener.close()


def test_a_backlog_that_stays_full_is_unreachable_not_a_hang(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "stuck.sock")
    listener, idle = _full_backlog(path)
    try:
        with pytest.raises(wire.Unreachable) as info:
            wire.call(path, wire.Request(version="0.1.0", command="STATUS"), None)
        assert "backlog" in str(info.value)
    finally:
        for s in idle:
            s.close()
        listener.close()
