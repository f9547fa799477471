"""What a CNI_NETNS file descriptor is, as ipamd classifies it (pod netns cases: the netns tier)."""

from __future__ import annotations

import os
import pathlib

import pytest
from vpccni.ipamd.cni.netns_kind import NetnsKind, classify_netns


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/proc/thread-self/ns/net", NetnsKind.HOST),
        ("/proc/self/ns/uts", NetnsKind.OTHER),  # a namespace, but not a network one
        ("/proc/self/ns/mnt", NetnsKind.OTHER),
    ],
)
def test_namespace_files(path: str, kind: NetnsKind) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        assert classify_netns(fd) is kind
    finally:
        os.close(fd)


def test_plain_files_and_fifos_are_not_namespaces(tmp_path: pathlib.Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (plain, fifo):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert classify_netns(fd) is NetnsKind.OTHER
        finally:
            os.close(fd)
