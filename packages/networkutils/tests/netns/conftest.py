"""Namespaces for the netns tier: each test makes its own uniquely named ones and always deletes them."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from vpccni.networkutils.netlink import Netlink
from vpccni.networkutils.netns import ThreadNetnsNetlink

T = TypeVar("T")


@dataclass
class Netns:
    name: str
    fd: int

    def sh(self, *argv: str, check: bool = True) -> str:
        """Run a command inside this namespace."""
        done = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} failed: {done.stderr}")
        return done.stdout

    def ip_json(self, *argv: str) -> Any:
        """`ip -n NAME -j ...`, parsed."""
        out = subprocess.run(["ip", "-n", self.name, "-j", *argv], capture_output=True, text=True, check=True)
        return json.loads(out.stdout or "[]")

    def delete(self) -> None:
        """Delete the namespace early (the fixture's cleanup then finds it gone)."""
        os.close(self.fd)
        self.fd = -1
        subprocess.run(["ip", "netns", "del", self.name], check=True)

    def run(self, fn: Callable[[Netlink], T]) -> T:
        """Call `fn` with a netlink handle, on a thread inside this namespace (sysctls included)."""
        return ThreadNetnsNetlink().run(self.fd, fn)


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], Netns]]:
    if os.geteuid() != 0:
        pytest.skip("the netns tier needs root")
    made: list[Netns] = []
    suffix = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def make(tag: str) -> Netns:
        name = f"vpccni-nu-{tag}-{suffix}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        ns = Netns(name=name, fd=os.open(f"/run/netns/{name}", os.O_RDONLY))
        made.append(ns)
        ns.sh("ip", "link", "set", "lo", "up")
        return ns

    try:
        yield make
    finally:
        for ns in made:
            if ns.fd >= 0:
                os.close(ns.fd)
            subprocess.run(["ip", "netns", "del", ns.name], check=False, capture_output=True)
