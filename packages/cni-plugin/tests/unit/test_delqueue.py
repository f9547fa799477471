"""The on-disk DEL queue: atomic entries, bound, drain with acknowledgement, corrupt entries kept."""

from __future__ import annotations

import os
import pathlib

import pytest
from vpccni.cniplugin import delqueue, wire
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode


def _del(container: str) -> wire.Request:
    return wire.Request(
        version="0.1.0", command="DEL", container_id=container, ifname="eth0",
        k8s_args=K8sArgs(pod_name="p", pod_namespace="ns"), netconf={"name": "aws-cni"}, cni_version="0.4.0",
    )  # fmt: skip


def test_drain_yields_in_order_and_removes_only_acknowledged(tmp_path: pathlib.Path) -> None:
    qdir = str(tmp_path / "q")
    for c in ("c1", "c2", "c3"):
        delqueue.enqueue(qdir, _del(c))
    seen = []
    for entry in delqueue.drain(qdir):
        seen.append(entry.request.container_id)
        assert entry.request == _del(entry.request.container_id)
        assert entry.queued_at > 0
        if entry.request.container_id != "c2":
            entry.ack()
    assert seen == ["c1", "c2", "c3"]
    assert [e.request.container_id for e in delqueue.drain(qdir)] == ["c2"]
    assert oct(os.stat(qdir).st_mode & 0o777) == "0o700"


def test_queue_is_bounded_and_says_what_to_do(tmp_path: pathlib.Path) -> None:
    qdir = str(tmp_path / "q")
    for i in range(3):
        delqueue.enqueue(qdir, _del(f"c{i}"), limit=3)
    with pytest.raises(CNIError) as info:
        delqueue.enqueue(qdir, _del("c9"), limit=3)
    assert info.value.code == ErrorCode.TRY_AGAIN_LATER
    assert "full" in info.value.msg and "start aws-node" in info.value.msg
    assert len(delqueue.pending(qdir)) == 3


def test_corrupt_entries_are_kept_aside_not_lost(tmp_path: pathlib.Path) -> None:
    qdir = tmp_path / "q"
    delqueue.enqueue(str(qdir), _del("good"))
    (qdir / "00000000000000000001-1-aaaa.json").write_text("{not json")
    (qdir / "00000000000000000002-1-bbbb.json").write_text(
        '{"command": "ADD", "containerID": "x", "ifName": "e"}'
    )
    assert [e.request.container_id for e in delqueue.drain(str(qdir))] == ["good"]
    assert sorted(p.name for p in qdir.glob("*.corrupt")) == [
        "00000000000000000001-1-aaaa.json.corrupt", "00000000000000000002-1-bbbb.json.corrupt",
    ]  # fmt: skip


def test_stale_temporary_files_are_cleaned_and_not_counted(tmp_path: pathlib.Path) -> None:
    qdir = tmp_path / "q"
    qdir.mkdir()
    tmp = qdir / ".tmp-half-written.json"
    tmp.write_text("{")
    os.utime(tmp, (1, 1))
    assert delqueue.pending(str(qdir)) == []
    assert list(delqueue.drain(str(qdir))) == []
    assert not tmp.exists()


def test_missing_directory_is_an_empty_queue(tmp_path: pathlib.Path) -> None:
    assert list(delqueue.drain(str(tmp_path / "nope"))) == []
