"""Real-packet reachability probes for network policy, many at once.

`PolicyServers` listens on TCP, UDP (and SCTP where the kernel has it) ports inside pod namespaces, as the
Kubernetes e2e suite's agnhost does. `probe_all` opens every probe's socket inside its source namespace
(a socket keeps the namespace it was made in), starts every TCP/SCTP connect and UDP exchange at once without
blocking, and waits on all of them together: a whole connectivity matrix costs about one timeout, whatever its
size. A policy drop is silent, so "blocked" means no handshake (TCP, SCTP) or no echo (UDP) in time.
"""

from __future__ import annotations

import enum
import errno
import os
import selectors
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass

from vpccni.networkutils.netns import run_in_netns
from vpccni.testbed.datapath.namespaces import netns_path

IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)


class Proto(enum.Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


def sctp_supported() -> bool:
    """Whether this kernel can open SCTP sockets (the sctp module is often absent in VMs and containers)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


def _new_socket(proto: Proto) -> socket.socket:
    if proto is Proto.UDP:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP if proto is Proto.SCTP else 0)


def _in_netns(netns: str, fn):  # type: ignore[no-untyped-def]
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, fn, name=f"probe-{netns}")
    finally:
        os.close(fd)


class PolicyServers:
    """Listeners on every port and protocol in pod namespaces, served by one selector thread.

    TCP and SCTP connections are accepted and closed; UDP datagrams are echoed back."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[str, list[socket.socket]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._serve, name="policy-servers", daemon=True)
        self._started = False

    def listen(self, netns: str, ports: Iterable[int], protocols: Iterable[Proto]) -> None:
        """Open the listeners inside `netns` (on every address)."""
        wanted = [(port, proto) for port in ports for proto in protocols]

        def make() -> list[tuple[socket.socket, Proto]]:
            made = []
            for port, proto in wanted:
                sock = _new_socket(proto)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("0.0.0.0", port))
                if proto is not Proto.UDP:
                    sock.listen(1024)
                sock.setblocking(False)
                made.append((sock, proto))
            return made

        for sock, proto in _in_netns(netns, make):
            with self._lock:
                self._sockets[netns].append(sock)
            self._selector.register(sock, selectors.EVENT_READ, proto)
        if not self._started:
            self._started = True
            self._thread.start()
        self._wake_w.send(b"x")

    def forget(self, netns: str) -> None:
        """Close the listeners of a pod about to go: a socket would keep its namespace, and the pod's veth,
        alive after the namespace is deleted."""
        with self._lock:
            socks = self._sockets.pop(netns, [])
        for sock in socks:
            with suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def close(self) -> None:
        self._stop.set()
        with suppress(OSError):
            self._wake_w.send(b"x")
        if self._started:
            self._thread.join(timeout=5)
        with self._lock:
            for socks in self._sockets.values():
                for sock in socks:
                    sock.close()
            self._sockets.clear()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> PolicyServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data is None:
                    with suppress(OSError):
                        sock.recv(64)
                    continue
                with suppress(OSError):
                    if key.data is Proto.UDP:
                        data, peer = sock.recvfrom(2048)
                        sock.sendto(data, peer)
                    else:
                        conn, _ = sock.accept()
                        conn.close()


@dataclass(frozen=True, kw_only=True)
class Probe:
    source_netns: str
    address: str
    port: int
    protocol: Proto


class Outcome(enum.Enum):
    CONNECTED = "connected"
    BLOCKED = "blocked"  # no answer before the deadline: what a policy drop looks like
    REFUSED = "refused"  # the packet arrived and nothing listened: a setup fault, not a policy verdict
    ERROR = "error"


@dataclass
class _Pending:
    index: int
    probe: Probe
    sock: socket.socket
    last_send: float = 0.0


def _open_sockets(probes: Sequence[tuple[int, Probe]], netns: str) -> list[tuple[int, socket.socket]]:
    def make() -> list[tuple[int, socket.socket]]:
        made = []
        for index, probe in probes:
            sock = _new_socket(probe.protocol)
            sock.setblocking(False)
            made.append((index, sock))
        return made

    return list(_in_netns(netns, make))


def probe_all(probes: Sequence[Probe], *, timeout_s: float = 1.5, udp_resend_s: float = 0.4) -> list[Outcome]:
    """Run every probe concurrently; the outcomes in the order of `probes`."""
    outcomes: list[Outcome] = [Outcome.BLOCKED] * len(probes)
    by_netns: dict[str, list[tuple[int, Probe]]] = defaultdict(list)
    for index, probe in enumerate(probes):
        by_netns[probe.source_netns].append((index, probe))
    pending: dict[int, _Pending] = {}
    selector = selectors.DefaultSelector()
    payload = b"vpccni-netpol-probe"
    try:
        for netns, group in by_netns.items():
            for index, sock in _open_sockets(group, netns):
                pending[index] = _Pending(index=index, probe=probes[index], sock=sock)
        now = time.monotonic()
        for item in pending.values():
            target = (item.probe.address, item.probe.port)
            if item.probe.protocol is Proto.UDP:
                with suppress(OSError):
                    item.sock.sendto(payload, target)
                item.last_send = now
                selector.register(item.sock, selectors.EVENT_READ, item)
                continue
            code = item.sock.connect_ex(target)
            if code not in (0, errno.EINPROGRESS):
                outcomes[item.index] = Outcome.ERROR
                continue
            selector.register(item.sock, selectors.EVENT_WRITE, item)
        deadline = time.monotonic() + timeout_s
        waiting = len(selector.get_map())
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(timeout=min(remaining, udp_resend_s / 2)):
                item = key.data
                if item.probe.protocol is Proto.UDP:
                    try:
                        item.sock.recv(2048)
                        outcomes[item.index] = Outcome.CONNECTED
                    except ConnectionRefusedError:
                        outcomes[item.index] = Outcome.REFUSED
                    except OSError:
                        continue
                else:
                    err = item.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err == 0:
                        outcomes[item.index] = Outcome.CONNECTED
                    elif err == errno.ECONNREFUSED:
                        outcomes[item.index] = Outcome.REFUSED
                    elif err in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        outcomes[item.index] = Outcome.BLOCKED
                    else:
                        outcomes[item.index] = Outcome.ERROR
                selector.unregister(item.sock)
                waiting -= 1
            now = time.monotonic()
            for key in list(selector.get_map().values()):
                item = key.data
                if item.probe.protocol is Proto.UDP and now - item.last_send >= udp_resend_s:
                    with suppress(OSError):
                        item.sock.sendto(payload, (item.probe.address, item.probe.port))
                    item.last_send = now
    finally:
        selector.close()
        for item in pending.values():
            item.sock.close()
    return outcomes
