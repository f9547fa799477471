"""The protocol between the aws-cni shim and ipamd's CNI endpoint (both sides import this module).

A Unix stream socket; each message is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON. The request travels with the opened ``CNI_NETNS`` as an ``SCM_RIGHTS`` file descriptor on its first
bytes, so ipamd needs neither the path nor the host's mount namespace. The answer is ``{"ok": <result or
null>}`` or ``{"error": {"code", "msg", "details"}}``. Messages are bounded, reads and writes time out.

Only C modules here (``_socket``, and JSON through ``jsoncodec``): the shim imports this module on every
call, and ``socket`` costs ~5 ms to import (``enum``, ``selectors``). ipamd passes its ``socket.socket``
objects, which are ``_socket.socket`` underneath.
"""

from __future__ import annotations

import _socket
import sys

from vpccni.cniplugin import environ, jsoncodec
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.values import FrozenValue

MAX_MESSAGE_BYTES = 2 << 20
CONNECT_TIMEOUT_S = 2.0
# The runtime waits minutes for a sandbox; ipamd gets most of that to find an address.
DEFAULT_TIMEOUT_S = 60.0
STATUS_TIMEOUT_S = 10.0
FORWARDED_COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC")
_HEADER = 4
HEADER_BYTES = _HEADER
# SCM_RIGHTS carries a C int array.
_FD_BYTES = 4


class WireError(Exception):
    """The exchange with ipamd failed; the message says what to check."""


class Unreachable(WireError):
    """Nothing accepted the connection: ipamd is not running, not ready, or the socket path is wrong."""


class NoAnswer(WireError):
    """The request may have reached ipamd but no valid answer came back in time."""


class Request(FrozenValue):
    """One CNI invocation forwarded to ipamd. ``has_netns_fd`` says whether a netns fd travels with it."""

    __slots__ = (
        "cni_version",
        "command",
        "container_id",
        "has_netns_fd",
        "ifname",
        "k8s_args",
        "netconf",
        "netns_path",
        "timeout_s",
        "version",
    )  # fmt: skip
    version: str
    command: str
    container_id: str
    ifname: str
    netns_path: str
    has_netns_fd: bool
    k8s_args: environ.K8sArgs
    netconf: dict[str, object]
    cni_version: str
    timeout_s: float

    def __init__(
        self, *, version: str, command: str, container_id: str = "", ifname: str = "", netns_path: str = "",
        has_netns_fd: bool = False, k8s_args: environ.K8sArgs | None = None,
        netconf: dict[str, object] | None = None, cni_version: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:  # fmt: skip
        self._set("version", version)
        self._set("command", command)
        self._set("container_id", container_id)
        self._set("ifname", ifname)
        self._set("netns_path", netns_path)
        self._set("has_netns_fd", has_netns_fd)
        self._set("k8s_args", k8s_args if k8s_args is not None else environ.K8sArgs())
        self._set("netconf", netconf if netconf is not None else {})
        self._set("cni_version", cni_version)
        self._set("timeout_s", timeout_s)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "command": self.command,
            "containerID": self.container_id,
            "ifName": self.ifname,
            "netnsPath": self.netns_path,
            "netnsFd": self.has_netns_fd,
            "args": self.k8s_args.to_dict(),
            "netconf": self.netconf,
            "cniVersion": self.cni_version,
            "timeoutS": self.timeout_s,
        }

    @classmethod
    def from_dict(cls, data: object) -> Request:
        """Validate a decoded request (the peer is not trusted): :class:`CNIError` on anything malformed."""
        if not isinstance(data, dict):
            raise _bad("the request is not a JSON object")
        strings = ("version", "command", "containerID", "ifName", "netnsPath", "cniVersion")
        for key in strings:
            if not isinstance(data.get(key, ""), str):
                raise _bad(f"{key} must be a string")
        command = data.get("command", "")
        if command not in FORWARDED_COMMANDS:
            raise _bad(f"unknown command {str(command)[:20]!r}")
        if command in ("ADD", "DEL", "CHECK"):
            environ.validate_container_id(data.get("containerID", ""))
            environ.validate_ifname(data.get("ifName", ""))
        timeout = data.get("timeoutS", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise _bad("timeoutS must be a number of seconds in (0, 3600]")
        netconf = data.get("netconf", {})
        args = data.get("args", {})
        if not isinstance(netconf, dict) or not isinstance(args, dict):
            raise _bad("netconf and args must be JSON objects")
        return cls(
            version=data.get("version", ""),
            command=command,
            container_id=data.get("containerID", ""),
            ifname=data.get("ifName", ""),
            netns_path=data.get("netnsPath", ""),
            has_netns_fd=data.get("netnsFd") is True,
            k8s_args=environ.K8sArgs.from_dict(args),
            netconf=netconf,
            cni_version=data.get("cniVersion", ""),
            timeout_s=float(timeout),
        )


def _bad(problem: str) -> CNIError:
    return CNIError(ErrorCode.DECODING_FAILURE, f"malformed request from aws-cni: {problem}")


def encode(message: object) -> bytes:
    body = jsoncodec.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(body)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    return len(body).to_bytes(_HEADER, "big") + body


def _recv_exact(conn: _socket.socket, size: int, first: bytes = b"") -> bytes:
    chunks = [first]
    got = len(first)
    while got < size:
        chunk = conn.recv(min(size - got, 1 << 16))
        if not chunk:
            raise WireError(f"connection closed after {got} of {size} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv_body(conn: _socket.socket, header: bytes) -> object:
    header = _recv_exact(conn, _HEADER, header)
    try:
        return jsoncodec.loads(_recv_exact(conn, frame_size(header)))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"message is not valid JSON: {exc}") from None


# --- the shim's side -----------------------------------------------------------------------------------


def call(
    socket_path: str, request: Request, netns_fd: int | None, *, timeout_s: float | None = None
) -> object:
    """Send ``request`` (with ``netns_fd``) to ipamd and return the ``ok`` value.

    Raises :class:`CNIError` for an error answer, :class:`Unreachable` when nothing accepts the
    connection and :class:`NoAnswer` when the exchange broke or timed out after connecting.
    """
    frame = encode(request.to_dict())
    sock = _connect(socket_path)
    try:
        sock.settimeout(timeout_s if timeout_s is not None else request.timeout_s)
        try:
            try:
                sent = _send_with_fd(sock, frame, netns_fd) if netns_fd is not None else 0
                if sent < len(frame):
                    sock.sendall(frame[sent:])
            except BrokenPipeError:
                # ipamd may answer (e.g. reject) and close before reading everything: read its answer.
                pass
            answer = _recv_body(sock, b"")
        except (OSError, WireError) as exc:
            # _socket.timeout: TimeoutError from 3.10 on, its own OSError subclass before.
            timed_out = isinstance(exc, (TimeoutError, _socket.timeout))
            what = "timed out" if timed_out else str(exc) or type(exc).__name__
            raise NoAnswer(f"no answer from ipamd on {socket_path}: {what}") from None
    finally:
        sock.close()
    if isinstance(answer, dict) and "ok" in answer:
        return answer["ok"]
    if isinstance(answer, dict) and "error" in answer:
        raise CNIError.from_dict(answer["error"])
    raise NoAnswer(f"ipamd on {socket_path} sent an answer that is neither ok nor error")


def _connect(socket_path: str) -> _socket.socket:
    """A connected socket; a full listen backlog (ipamd busy accepting) is retried for up to
    ``CONNECT_TIMEOUT_S``, anything else (no socket, nobody listening) fails at once."""
    waited = 0.0
    pause = 0.005
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(socket_path)
            return sock
        except BlockingIOError:  # EAGAIN: the backlog is full for now
            sock.close()
            if waited >= CONNECT_TIMEOUT_S:
                raise Unreachable(
                    f"ipamd did not accept a connection on {socket_path} within {CONNECT_TIMEOUT_S:.0f}s "
                    "(its listen backlog stayed full): the node is overloaded"
                ) from None
        except OSError as exc:
            sock.close()
            reason = exc.strerror or type(exc).__name__
            raise Unreachable(
                f"cannot reach ipamd: is aws-node running? socket {socket_path}: {reason.lower()}"
            ) from None
        import time  # only on this rare path: the shim's start imports nothing it can avoid

        time.sleep(pause)
        waited += pause
        pause = min(pause * 2, 0.1)


def _send_with_fd(sock: _socket.socket, frame: bytes, fd: int) -> int:
    """``socket.send_fds(sock, [frame], [fd])`` without importing ``socket``."""
    fd_bytes = fd.to_bytes(_FD_BYTES, sys.byteorder, signed=True)
    return sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd_bytes)])


# --- ipamd's side --------------------------------------------------------------------------------------


def recv_with_fds(conn: _socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int], int]:
    """``socket.recv_fds``: the bytes, every fd that came with them, and the message flags."""
    data, ancillary, flags, _ = conn.recvmsg(size, _socket.CMSG_LEN(max_fds * _FD_BYTES))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % _FD_BYTES
            fds.extend(
                int.from_bytes(payload[i : i + _FD_BYTES], sys.byteorder, signed=True)
                for i in range(0, whole, _FD_BYTES)
            )
    return data, fds, flags


def frame_size(header: bytes) -> int:
    """The body size a frame's header announces; :class:`WireError` beyond the limit."""
    size = int.from_bytes(header, "big")
    if size > MAX_MESSAGE_BYTES:
        raise WireError(f"peer announced {size} bytes, more than the {MAX_MESSAGE_BYTES}-byte limit")
    return size


def decode_request(body: bytes, fd: int | None) -> Request:
    """A request frame's body, checked against the fd that came with it (:class:`CNIError` when
    malformed, :class:`WireError` when not JSON). Does not close ``fd``."""
    try:
        data = jsoncodec.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"message is not valid JSON: {exc}") from None
    request = Request.from_dict(data)
    if request.has_netns_fd != (fd is not None):
        raise _bad("netnsFd does not match the file descriptors received")
    return request


def recv_request(conn: _socket.socket) -> tuple[Request, int | None]:
    """Read one request and the netns fd that came with it (the caller owns and must close the fd).

    Raises :class:`WireError` for a broken exchange and :class:`CNIError` for a malformed request; any
    received fd is closed before raising.
    """
    fd: int | None = None
    try:
        header, fds, flags = recv_with_fds(conn, _HEADER, 1)
        if fds:
            fd = fds[0]
            for extra in fds[1:]:
                close_fd(extra)
        if flags & getattr(_socket, "MSG_CTRUNC", 0):
            raise WireError("the peer sent more file descriptors than the one netns fd")
        if not header:
            raise WireError("the peer closed the connection without a request")
        header = _recv_exact(conn, _HEADER, header)
        request = decode_request(_recv_exact(conn, frame_size(header)), fd)
    except BaseException:
        if fd is not None:
            close_fd(fd)
        raise
    return request, fd


def send_ok(conn: _socket.socket, result: object) -> None:
    conn.sendall(encode({"ok": result}))


def send_error(conn: _socket.socket, error: CNIError) -> None:
    conn.sendall(encode({"error": {"code": error.code, "msg": error.msg, "details": error.details}}))


def peer_credentials(conn: _socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end (``SO_PEERCRED``), as of its connect()."""
    import struct

    size = struct.calcsize("3i")
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, size))
    return pid, uid, gid


def close_fd(fd: int) -> None:
    import posix

    try:
        posix.close(fd)
    except OSError:
        pass
