"""Test doubles for the shim's peer (product code never imports this module).

:class:`FakeEndpoint` is a small stdlib server speaking the real wire protocol on a Unix socket: it
records every request with the identity (device, inode) of the netns fd that came with it, and answers
through a handler the test supplies, so shim tests exercise the real framing and ``SCM_RIGHTS``.

:func:`fake_standalone` lays out a standalone build (``vpccni.cniplugin.install``'s layout) with stand-in
files, for tests of installing it.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vpccni.cniplugin import install, wire
from vpccni.cniplugin.errors import CNIError

Handler = Callable[[wire.Request, "int | None"], object]


class HangUp(Exception):
    """Raised by a handler: the endpoint closes the connection without answering (ipamd died mid-call)."""


@dataclass(frozen=True, kw_only=True)
class Received:
    request: wire.Request
    fd_identity: tuple[int, int] | None
    peer: tuple[int, int, int]


class FakeEndpoint:
    """A stand-in for ipamd's CNI endpoint: ``handler(request, fd)`` returns the ok value or raises."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self.received: list[Received] = []
        self.failures: list[Exception] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> FakeEndpoint:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(16)
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="fake-cni-endpoint", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        try:
            request, fd = wire.recv_request(conn)
        except (wire.WireError, CNIError, OSError) as exc:
            self.failures.append(exc)
            if isinstance(exc, CNIError):
                wire.send_error(conn, exc)
            return
        try:
            identity = None
            if fd is not None:
                st = os.fstat(fd)
                identity = (st.st_dev, st.st_ino)
            self.received.append(
                Received(request=request, fd_identity=identity, peer=wire.peer_credentials(conn))
            )
            try:
                wire.send_ok(conn, self._handler(request, fd))
            except CNIError as err:
                wire.send_error(conn, err)
            except HangUp:
                pass
        finally:
            if fd is not None:
                os.close(fd)

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> FakeEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fake_standalone(
    directory: Path, *, runtime: str = "0.0.0-0123456789ab", executables: tuple[str, ...] = ("aws-cni",)
) -> Path:
    """A standalone build's layout in ``directory`` with stand-in files: ``.vpccni/<runtime>/`` holding a
    shell script per executable (printing its build) and a library file, and a symlink per executable."""
    root = directory / install.RUNTIME_DIR / runtime
    (root / "lib").mkdir(parents=True, exist_ok=True)
    (root / "lib" / "libc.so.6").write_bytes(b"\x7fELF stand-in " + runtime.encode())
    for name in executables:
        script = root / name
        script.write_text(f"#!/bin/sh\necho {name} {runtime}\n")
        script.chmod(0o755)
    install.activate(directory, dict.fromkeys(executables, runtime))
    return root
