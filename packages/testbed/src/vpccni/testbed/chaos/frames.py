"""Hostile clients of the agent's two local sockets: what a local process can send to `cni.sock` (the shim's
length-prefixed JSON with an `SCM_RIGHTS` netns fd) and to `ipamd.sock` (gRPC over HTTP/2), and clients that
connect and then send nothing, or one byte at a time.

The frame builders are pure (bytes from a `random.Random`); `send_cni_frame` and `send_grpc_frame` deliver
one on a fresh connection and read what comes back within a deadline; `HeldClients` keeps idle or slow
connections open on a thread while something else is measured.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from vpccni.cniplugin import wire
from vpccni.cniplugin.version import VERSION

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ANSWER_WAIT_S = 2.0
GRPC_METHODS = (
    "/rpc.CNIBackend/AddNetwork",
    "/rpc.CNIBackend/DelNetwork",
    "/rpc.NPBackend/EnforceNpToPod",
    "/rpc.ConfigServerBackend/GetNetworkPolicyConfigs",
    "/grpc.health.v1.Health/Check",
    "/no.Such/Method",
)


class CniFrame(enum.Enum):
    RANDOM_BYTES = "random-bytes"
    TRUNCATED = "truncated"  # a valid request cut short, then the client half-closes
    HUGE_HEADER = "huge-header"  # a length prefix far beyond the limit
    OVERSIZED_BODY = "oversized-body"  # a body just over the limit, really sent
    BAD_JSON = "bad-json"
    BAD_REQUEST = "bad-request"  # valid JSON that is no valid request
    FD_MISMATCH = "fd-mismatch"  # netnsFd and the descriptors sent disagree, or the fd is no namespace
    GONE_AFTER_SEND = "gone-after-send"  # a valid STATUS, and the client leaves without reading


class GrpcFrame(enum.Enum):
    RANDOM_BYTES = "random-bytes"
    TRUNCATED_PREFACE = "truncated-preface"
    PREFACE_GARBAGE = "preface-garbage"  # the HTTP/2 preface, then frames of random bytes
    HUGE_FRAME = "huge-frame"  # the preface and SETTINGS, then a frame header announcing 16 MiB
    BAD_MESSAGE = "bad-message"  # a real gRPC call whose message is random bytes


# --- cni.sock -------------------------------------------------------------------------------------------


def valid_request(
    command: str = "STATUS", *, netns_fd: bool = False, container_id: str = ""
) -> dict[str, object]:
    return wire.Request(
        version=VERSION,
        command=command,
        container_id=container_id or "f" * 64,
        ifname="eth0",
        has_netns_fd=netns_fd,
        netconf={"cniVersion": "1.1.0", "name": "aws-cni", "type": "aws-cni"},
        cni_version="1.1.0",
        timeout_s=5.0,
    ).to_dict()


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


_BROKEN_FIELDS: tuple[tuple[str, object], ...] = (
    ("command", "VERSION"),
    ("command", 7),
    ("containerID", "../x"),
    ("containerID", "x" * 2000),
    ("ifName", "a/b"),
    ("timeoutS", 0),
    ("timeoutS", -1),
    ("timeoutS", 1e308),
    ("timeoutS", True),
    ("netconf", []),
    ("args", {"K8S_POD_NAME": 5}),
    ("args", "x"),
    ("netnsFd", "yes"),
    ("version", None),
    ("cniVersion", "9.9.9"),
    ("netconf", {"cniVersion": "1.1.0", "name": "-", "type": "aws-cni"}),
)


def bad_request(rng: random.Random) -> dict[str, object]:
    """A valid request with one field broken: wrong type, unknown command, out-of-range timeout, bad ids."""
    request = valid_request(rng.choice(("ADD", "DEL", "CHECK", "STATUS", "GC")))
    key, value = rng.choice(_BROKEN_FIELDS)
    request[key] = value
    return request


def cni_frame(kind: CniFrame, rng: random.Random) -> bytes:
    """The bytes of one hostile message (FD_MISMATCH's descriptors are added by `send_cni_frame`)."""
    if kind is CniFrame.RANDOM_BYTES:
        return rng.randbytes(rng.randint(1, 4096))
    if kind is CniFrame.TRUNCATED:
        whole = wire.encode(valid_request("STATUS"))
        return whole[: rng.randint(1, len(whole) - 1)]
    if kind is CniFrame.HUGE_HEADER:
        size = rng.choice((wire.MAX_MESSAGE_BYTES + 1, 0x7FFFFFFF, 0xFFFFFFFF))
        return size.to_bytes(4, "big") + rng.randbytes(rng.randint(0, 64))
    if kind is CniFrame.OVERSIZED_BODY:
        return _frame(b'{"version":"' + b"x" * (wire.MAX_MESSAGE_BYTES + 1) + b'"}')
    if kind is CniFrame.BAD_JSON:
        return _frame(rng.choice([b"{", b"[1,2", b"\xff\xfe", b'{"a":NaN', b"[" * 50_000, rng.randbytes(64)]))
    if kind is CniFrame.BAD_REQUEST:
        return _frame(json.dumps(bad_request(rng)).encode())
    if kind is CniFrame.FD_MISMATCH:
        return wire.encode(
            valid_request("ADD", netns_fd=rng.random() < 0.7, container_id=rng.randbytes(32).hex())
        )
    return wire.encode(valid_request("STATUS"))


@dataclass(frozen=True, kw_only=True)
class Delivery:
    answered: bool  # a whole answer came back
    closed: bool  # the server closed the connection without (a whole) answer
    error_code: int | None = None  # the CNI error code of the answer, when it was an error


def _read_cni_answer(sock: socket.socket, wait_s: float) -> Delivery:
    deadline = time.monotonic() + wait_s
    data = b""
    sock.setblocking(False)
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return Delivery(answered=False, closed=True)
            if not chunk:
                return Delivery(answered=False, closed=True)
            data += chunk
            if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
                code = None
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    code = json.loads(data[4:])["error"]["code"]
                return Delivery(answered=True, closed=False, error_code=code)
    return Delivery(answered=False, closed=False)


def _fds_for_mismatch(rng: random.Random, announced: bool) -> list[int]:
    """Descriptors that do not fit the request: none when one is announced, a pipe, /dev/null, two."""
    read_end, write_end = os.pipe()
    os.close(write_end)
    choice = rng.randrange(4)
    if announced and choice == 0:
        os.close(read_end)
        return []
    if choice == 1:
        os.close(read_end)
        return [os.open("/dev/null", os.O_RDONLY)]
    if choice == 2:
        return [read_end, os.open("/dev/null", os.O_RDONLY)]
    return [read_end]


def send_cni_frame(
    path: str, kind: CniFrame, rng: random.Random, *, wait_s: float = ANSWER_WAIT_S
) -> Delivery:
    """One hostile message on a new connection to the CNI endpoint; what came back within `wait_s`."""
    data = cni_frame(kind, rng)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(path)
        try:
            if kind is CniFrame.FD_MISMATCH:
                announced = json.loads(data[4:])["netnsFd"] is True
                fds = _fds_for_mismatch(rng, announced)
                try:
                    socket.send_fds(sock, [data], fds)
                finally:
                    for fd in fds:
                        os.close(fd)
            else:
                sock.sendall(data)
            if kind is CniFrame.GONE_AFTER_SEND:
                return Delivery(answered=False, closed=False)
            if kind is CniFrame.TRUNCATED:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return Delivery(answered=False, closed=True)
        return _read_cni_answer(sock, wait_s)


# --- ipamd.sock -----------------------------------------------------------------------------------------


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes, *, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return (
        struct.pack(">I", size)[1:] + bytes([kind & 0xFF, flags & 0xFF]) + struct.pack(">I", stream) + payload
    )


def grpc_frame(kind: GrpcFrame, rng: random.Random) -> bytes:
    """The raw HTTP/2 bytes of one hostile connection (BAD_MESSAGE goes through a real gRPC client)."""
    if kind is GrpcFrame.RANDOM_BYTES:
        return rng.randbytes(rng.randint(1, 4096))
    if kind is GrpcFrame.TRUNCATED_PREFACE:
        return HTTP2_PREFACE[: rng.randint(1, len(HTTP2_PREFACE) - 1)]
    settings = _h2_frame(4, 0, 0, b"")
    if kind is GrpcFrame.HUGE_FRAME:
        return HTTP2_PREFACE + settings + _h2_frame(0, 0, 1, rng.randbytes(64), length=0xFFFFFF)
    frames = b"".join(
        _h2_frame(
            rng.randrange(256), rng.randrange(256), rng.randrange(1 << 31), rng.randbytes(rng.randint(0, 64))
        )
        for _ in range(rng.randint(1, 8))
    )
    return HTTP2_PREFACE + settings + frames


def send_grpc_frame(path: str, kind: GrpcFrame, rng: random.Random, *, wait_s: float = ANSWER_WAIT_S) -> bool:
    """One hostile connection to the gRPC socket; True when the server answered or closed it in time."""
    if kind is GrpcFrame.BAD_MESSAGE:
        with grpc.insecure_channel(f"unix:{path}") as channel:
            call = channel.unary_unary(rng.choice(GRPC_METHODS))
            try:
                call(rng.randbytes(rng.randint(0, 512)), timeout=wait_s)
            except grpc.RpcError as err:
                return err.code() is not grpc.StatusCode.DEADLINE_EXCEEDED
            return True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(wait_s)
        sock.connect(path)
        try:
            sock.sendall(grpc_frame(kind, rng))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except OSError:
            return True
        return True


# --- clients that hold connections ---------------------------------------------------------------------


class HeldClients:
    """`idle` connections that send nothing and `slow` ones that send a valid request one byte every
    `byte_every_s`, all held open (and reopened when the server drops them) until `close()`."""

    def __init__(
        self, path: str, *, idle: int, slow: int, byte_every_s: float = 5.0, payload: bytes = b""
    ) -> None:
        self._path = path
        self._idle = idle
        self._slow = slow
        self._every = byte_every_s
        self._payload = payload or wire.encode(valid_request("STATUS"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.opened = 0  # connections made (reopened ones included)
        self.refused = 0  # connects that failed

    def __enter__(self) -> HeldClients:
        self._thread = threading.Thread(target=self._run, name="held-clients", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self._path)
        except BlockingIOError:
            pass  # a full backlog: it completes (or fails) later
        except OSError:
            sock.close()
            self.refused += 1
            return None
        self.opened += 1
        return sock

    def _run(self) -> None:
        idle: list[socket.socket | None] = [self._connect() for _ in range(self._idle)]
        slow: list[tuple[socket.socket | None, int]] = [(self._connect(), 0) for _ in range(self._slow)]
        try:
            while not self._stop.wait(self._every):
                idle = [s if _alive(s) else _closed_then(s, self._connect) for s in idle]
                slow = [self._drip(s, sent) for s, sent in slow]
        finally:
            for s in idle + [s for s, _ in slow]:
                if s is not None:
                    s.close()

    def _drip(self, sock: socket.socket | None, sent: int) -> tuple[socket.socket | None, int]:
        """One more byte of the request; a connection the server closed (or a finished request) is
        replaced by a new one, so the server always has `slow` slow clients."""
        if sock is None or sent >= len(self._payload) or not _alive(sock):
            return _closed_then(sock, self._connect), 0
        try:
            sock.send(self._payload[sent : sent + 1])
        except (BlockingIOError, InterruptedError):
            return sock, sent
        except OSError:
            return _closed_then(sock, self._connect), 0
        return sock, sent + 1


def _alive(sock: socket.socket | None) -> bool:
    """Whether the server still holds the connection open (no EOF or error waiting on it)."""
    if sock is None:
        return False
    try:
        data = sock.recv(65536, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    return bool(data)


def _closed_then(
    sock: socket.socket | None, connect: Callable[[], socket.socket | None]
) -> socket.socket | None:
    if sock is not None:
        sock.close()
    return connect()
