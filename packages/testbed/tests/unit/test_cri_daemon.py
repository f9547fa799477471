"""The containerd harness refuses to start without its node namespace and needs nothing cleaned up then."""

from __future__ import annotations

from pathlib import Path

import pytest
from vpccni.testbed.cri.daemon import Containerd, ContainerdError


def test_start_without_the_namespace_fails_before_making_anything(tmp_path: Path) -> None:
    base = tmp_path / "ctd"
    runtime = Containerd(netns_path=tmp_path / "no-such-netns", base_dir=base)

    with pytest.raises(ContainerdError, match="does not exist: create the node first"):
        runtime.start()

    assert not base.exists()
    assert runtime.pid is None
    runtime.stop()  # nothing to do, and no error


def test_layout_and_client_need_a_started_daemon(tmp_path: Path) -> None:
    runtime = Containerd(netns_path=tmp_path)
    with pytest.raises(ContainerdError, match="call start"):
        runtime.client()
    assert runtime.cgroup_parent.startswith("/vpccni-cri-")
    assert runtime.cgroup_parent != Containerd(netns_path=tmp_path).cgroup_parent
