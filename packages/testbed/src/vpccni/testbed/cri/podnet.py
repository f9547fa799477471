"""Acting inside a CRI pod's network namespace, which containerd mounts at a path of its own (not /run/netns).

The probes in `vpccni.testbed.datapath.probes` address namespaces by `ip netns` name; a pod's namespace has
only a path (`PodSandbox.netns_path`), so ping goes through `nsenter --net=<path>` here, and the TCP echo
server and client are the testbed's, given the path.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

from vpccni.testbed.datapath import probes
from vpccni.testbed.datapath.probes import EchoServer


def ping(netns_path: Path, dst: ipaddress.IPv4Address, *, timeout: int = 3, count: int = 1) -> bool:
    """ICMP echo from the pod to `dst` with busybox's ping; True when a reply came back."""
    if shutil.which("busybox") is None:
        raise RuntimeError("busybox is needed for ping probes: apt-get install busybox-static")
    argv = ["nsenter", f"--net={netns_path}", "busybox", "ping", "-c", str(count), "-W", str(timeout)]
    argv.append(str(dst))
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def addresses(netns_path: Path, ifname: str = "eth0") -> list[ipaddress.IPv4Interface]:
    """IPv4 addresses on `ifname` inside the pod (what the plugin configured)."""
    out = subprocess.run(
        ["nsenter", f"--net={netns_path}", "ip", "-4", "-o", "addr", "show", "dev", ifname],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [ipaddress.IPv4Interface(line.split()[3]) for line in out.splitlines() if " inet " in line]


def echo_server(netns_path: Path, ip: ipaddress.IPv4Address, port: int = 0) -> EchoServer:
    """The testbed's TCP echo server, listening on ip:port inside the pod (call `start()` or use `with`)."""
    return EchoServer(netns=str(netns_path.resolve()), ip=ip, port=port)


def tcp_echo(netns_path: Path, dst: ipaddress.IPv4Address, port: int, *, timeout: float = 5.0) -> str | None:
    """Connect from the pod to an echo server; the source address the server saw, or None on failure."""
    return probes.tcp_echo(str(netns_path.resolve()), dst, port, timeout=timeout)
