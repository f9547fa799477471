"""The harness's cleanup finds its own processes by their command line and sweeps only directories whose
owner is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vpccni.testbed.cri import leftovers
from vpccni.testbed.cri.leftovers import Owner

PARENT = "/vpccni-cri-unit-test-none"  # a cgroup parent that does not exist


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def fake_containerd(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line looks like the harness's containerd for `tmp_path`."""
    code = "import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "--config", str(tmp_path / "config.toml")])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_owner_round_trip_and_liveness(tmp_path: Path, dead_pid: int) -> None:
    me = Owner.me(cgroup_parent=PARENT)
    me.write(tmp_path)
    assert Owner.read(tmp_path) == me
    assert me.alive()
    assert not Owner(pid=dead_pid, start_ticks=me.start_ticks, cgroup_parent=PARENT).alive()
    # PID reuse: the same PID with another start time is another process.
    assert not Owner(pid=os.getpid(), start_ticks=me.start_ticks + 1, cgroup_parent=PARENT).alive()
    (tmp_path / leftovers.OWNER_FILE).write_text("{not json")
    assert Owner.read(tmp_path) is None


def test_sweep_removes_only_directories_whose_owner_is_gone(tmp_path: Path, dead_pid: int) -> None:
    mine = tmp_path / f"{leftovers.DIR_PREFIX}alive"
    stale = tmp_path / f"{leftovers.DIR_PREFIX}stale"
    fresh_orphan = tmp_path / f"{leftovers.DIR_PREFIX}starting"
    old_orphan = tmp_path / f"{leftovers.DIR_PREFIX}old"
    unrelated = tmp_path / "something-else"
    for directory in (mine, stale, fresh_orphan, old_orphan, unrelated):
        (directory / "state").mkdir(parents=True)
    Owner.me(cgroup_parent=PARENT).write(mine)
    Owner(pid=dead_pid, start_ticks=1, cgroup_parent=PARENT).write(stale)
    long_ago = time.time() - leftovers.ORPHAN_AGE_S - 60
    os.utime(old_orphan, (long_ago, long_ago))

    cleaned = leftovers.sweep_stale(tmp_path)

    assert sorted(cleaned) == sorted([stale, old_orphan])
    assert mine.exists() and fresh_orphan.exists() and unrelated.exists()
    assert not stale.exists() and not old_orphan.exists()


def test_harness_processes_are_found_by_their_paths_and_ended(
    tmp_path: Path, fake_containerd: subprocess.Popen[bytes]
) -> None:
    other = tmp_path / "other"
    deadline = time.monotonic() + 10
    while fake_containerd.pid not in leftovers.harness_pids(base=tmp_path):
        assert time.monotonic() < deadline, "the process never showed up"
        time.sleep(0.05)
    assert fake_containerd.pid not in leftovers.harness_pids(base=other)

    leftovers.end_process(fake_containerd.pid, proc=fake_containerd, grace=5)

    assert fake_containerd.poll() is not None
    assert not leftovers.alive(fake_containerd.pid)


def test_cgroup_parents_outside_the_harness_are_never_touched() -> None:
    assert leftovers._cgroup_dirs("/") == []
    assert leftovers._cgroup_dirs("/system.slice") == []
    assert leftovers._cgroup_dirs(f"/{leftovers.DIR_PREFIX}x/../..") == []
