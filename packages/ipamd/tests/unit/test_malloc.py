"""glibc's allocator tuning: arenas capped, free pages inside the heap handed back by trim."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest
from vpccni.ipamd.adapters import malloc

pytestmark = pytest.mark.skipif(malloc._glibc() is None, reason="glibc only")


def _rss_anon_kib() -> int:
    found = re.search(r"RssAnon:\s+(\d+)", Path("/proc/self/status").read_text())
    assert found is not None
    return int(found.group(1))


def test_arenas_can_be_capped() -> None:
    assert malloc.limit_arenas(malloc.DEFAULT_ARENAS) is True


def test_trim_returns_free_pages_inside_the_heap() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    # 64 MiB in blocks below the mmap threshold, touched so they are resident; then all freed but the last,
    # which pins the top of the heap so glibc's automatic top trim cannot hand the hole back by itself.
    blocks = [libc.malloc(16 * 1024) for _ in range(4096)]
    assert all(blocks)
    for block in blocks:
        libc.memset(block, 1, 16 * 1024)
    for block in blocks[:-1]:
        libc.free(block)
    before = _rss_anon_kib()
    try:
        assert malloc.trim() is True
        assert before - _rss_anon_kib() > 32 * 1024
    finally:
        libc.free(blocks[-1])
