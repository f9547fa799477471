"""Real-traffic probes between testbed namespaces: ping and a TCP echo, for tests and the demo.

Sockets are created inside the namespace they belong to (see `namespaces`); ping runs busybox's, which the
bootstrap installs, through `ip netns exec`.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import threading
import time
from contextlib import suppress

from . import namespaces as ns

_PING = ("busybox", "ping")
_ECHO_WAIT_S = 1  # busybox -W: whole seconds


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ping(
    netns: str,
    dst: IPAddress,
    *,
    source: IPAddress | None = None,
    timeout: int = 3,
) -> bool:
    """ICMP echoes from `netns` to `dst`, one a second, until one is answered (True) or `timeout` seconds
    have passed (False, after at least one echo).

    Generous by default: on a loaded 2-core machine the first echo can wait over a second for ARP or
    neighbour discovery, or be lost. busybox's `-c N` waits for all N replies (and fails with `-w` when one
    is lost), so each echo is its own `-c 1 -W 1`: a flow that works answers the first or a later echo at
    once, and a denied flow, which answers none, is reported denied after `timeout` seconds as before."""
    if shutil.which(_PING[0]) is None:
        raise RuntimeError("busybox is needed for ping probes: apt-get install busybox-static")
    argv = ["ip", "netns", "exec", netns, *_PING, "-c", "1", "-W", str(_ECHO_WAIT_S)]
    if source is not None:
        argv += ["-I", str(source)]
    argv.append(str(dst))
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        if subprocess.run(argv, capture_output=True, check=False).returncode == 0:
            return True
        if started + _ECHO_WAIT_S >= deadline:
            return False
        # An echo that failed at once (no route yet) is retried a second after it was sent, as ping would.
        time.sleep(max(0.0, started + _ECHO_WAIT_S - time.monotonic()))


class EchoServer:
    """A TCP echo server inside a namespace: answers each message with the peer address and the message."""

    def __init__(self, *, netns: str, ip: IPAddress, port: int = 0) -> None:
        self._netns = netns
        self._ip = ip
        self._port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the echo server is not started")
        return int(self._sock.getsockname()[1])

    def start(self) -> EchoServer:
        self._sock = ns.listen_tcp(self._netns, str(self._ip), self._port)
        self._thread = threading.Thread(target=self._serve, args=(self._sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._sock is not None:
            with suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _serve(sock: socket.socket) -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with suppress(OSError):
                    data = conn.recv(4096)
                    conn.sendall(f"{peer[0]} ".encode() + data)


def tcp_echo(
    netns: str,
    dst: IPAddress,
    port: int,
    *,
    source: IPAddress | None = None,
    timeout: float = 5.0,
) -> str | None:
    """Connect from `netns` (optionally from `source`) and send one message; returns the source address the
    server saw, or None when the connection failed (dropped, refused, timed out)."""

    def attempt() -> str | None:
        sock = socket.socket(socket.AF_INET6 if dst.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            if source is not None:
                sock.bind((str(source), 0))
            sock.connect((str(dst), port))
            sock.sendall(b"hello\n")
            reply = sock.recv(4096).decode()
        except OSError:
            return None
        finally:
            sock.close()
        seen, _, payload = reply.partition(" ")
        return seen if payload == "hello\n" else None

    return ns.in_netns(netns, attempt)
