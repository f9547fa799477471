"""Named network namespaces the testbed creates, and ways to act inside them without leaving the caller's.

Every socket made here (netlink, TCP listeners) is created on a short-lived thread that entered the namespace:
a socket keeps the namespace it was created in, so the rest of the process stays in the root namespace and the
machine's own interfaces, routes and firewall are never touched.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute
from vpccni.networkutils.netns import run_in_netns

T = TypeVar("T")

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")


def netns_path(name: str) -> Path:
    """Where `ip netns` mounts the namespace called `name`; an absolute path (a namespace mounted elsewhere,
    e.g. a pod sandbox's under containerd's state dir) names itself, so every helper here takes either."""
    path = Path(name)
    return path if path.is_absolute() else NETNS_DIR / name


def create_netns(name: str) -> Path:
    """`ip netns add <name>`; raises if it already exists (names are unique per testbed run)."""
    _run(["ip", "netns", "add", name], what=f"create network namespace {name}")
    return netns_path(name)


def alias_netns(path: Path | str, name: str) -> str:
    """Name a namespace mounted elsewhere (a containerd pod sandbox's) under /run/netns, by a bind mount as
    `ip netns add` makes, so the probes can enter it by name; `delete_netns(name)` removes it."""
    target = netns_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch()
    proc = subprocess.run(
        ["mount", "--bind", str(path), str(target)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        with suppress(OSError):
            target.unlink()
        raise RuntimeError(f"could not name the namespace {path}: {proc.stderr.strip()}")
    return name


def delete_netns(name: str) -> None:
    """`ip netns delete <name>`; links inside die with it (a veth pair dies with either end). Idempotent."""
    if not netns_path(name).exists():
        return
    _run(["ip", "netns", "delete", name], what=f"delete network namespace {name}")


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Call `fn()` on a thread inside namespace `name` (which then ends) and return its result."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, fn, name=f"in-{name}")
    finally:
        os.close(fd)


def open_iproute(name: str) -> IPRoute:
    """An rtnetlink handle bound to namespace `name`, usable from any thread (caller closes it)."""
    sock = in_netns(name, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE))
    return IPRoute(use_socket=sock)


def listen_tcp(name: str, host: str, port: int, *, backlog: int = 64) -> socket.socket:
    """A listening TCP socket on host:port inside namespace `name` (port 0 picks a free one)."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    return in_netns(name, make)


def connect_tcp(name: str, host: str, port: int, *, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to host:port made from inside namespace `name`."""
    return in_netns(name, lambda: socket.create_connection((host, port), timeout=timeout))


def set_sysctls(name: str, values: dict[str, str]) -> None:
    """Write `net.*` sysctls of namespace `name` (keys in dotted form, e.g. `net.ipv4.ip_forward`).

    /proc/sys/net shows the namespace of the thread that opens the file, so this never touches the root's.
    """

    def write() -> None:
        for key, value in values.items():
            if not key.startswith("net."):
                raise ValueError(f"{key} is not a per-namespace sysctl; only net.* keys can be set here")
            Path("/proc/sys", *key.split(".")).write_text(value)

    in_netns(name, write)


def exec_in_netns(name: str, argv: Sequence[str], *, stdin: str | None = None) -> str:
    """Run a command inside namespace `name` (`ip netns exec`) and return its stdout."""
    return _run(["ip", "netns", "exec", name, *argv], what=f"run {argv[0]} in {name}", stdin=stdin)


def delete_all(names: Sequence[str]) -> None:
    """Delete every namespace in `names`, logging (not raising) failures so cleanup always goes on."""
    for name in names:
        with suppress(RuntimeError):
            delete_netns(name)


def _run(argv: list[str], *, what: str, stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        log.error("%s failed: %s", what, proc.stderr.strip())
        raise RuntimeError(
            f"could not {what}: {proc.stderr.strip() or proc.returncode} "
            "(the testbed datapath needs root and iproute2/nftables installed)"
        )
    return proc.stdout
