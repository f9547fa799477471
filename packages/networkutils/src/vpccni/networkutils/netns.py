"""Run code inside another network namespace given as a file descriptor.

setns(2) changes only the calling thread, so each call runs on a fresh thread that enters the namespace, does
its work and ends; the caller's namespace is never touched (`os.setns` is Python 3.12+, hence ctypes).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from .netlink import Netlink, open_netlink

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace `fd` refers to."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({fd}) failed: {os.strerror(err)}; is the fd an open network namespace?")


def run_in_netns(netns_fd: int, fn: Callable[[], T], *, name: str = "netns") -> T:
    """Call `fn()` on a dedicated thread inside the network namespace `netns_fd` and return its result.

    The thread ends after `fn` returns, so nothing else ever runs in the entered namespace by accident.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            setns(netns_fd)
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=body, name=f"{name}-{netns_fd}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class NetnsNetlink(Protocol):
    """Opens a `Netlink` handle inside a namespace fd and runs a function with it."""

    def run(self, netns_fd: int, fn: Callable[[Netlink], T]) -> T: ...


class ThreadNetnsNetlink:
    """`NetnsNetlink` that opens a raw rtnetlink socket (`open_netlink`) on a thread that entered the
    namespace, and runs `fn` there (so its sysctls are the namespace's too)."""

    def run(self, netns_fd: int, fn: Callable[[Netlink], T]) -> T:
        def body() -> T:
            with open_netlink() as netlink:
                return fn(netlink)

        return run_in_netns(netns_fd, body, name="pod-netns")
