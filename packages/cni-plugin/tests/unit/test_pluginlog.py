"""The shim's JSON-lines log: levels, the file's rotation."""

from __future__ import annotations

import json
import pathlib

from vpccni.cniplugin.pluginlog import BACKUP_COUNT, PluginLog


def _lines(path: pathlib.Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_below_the_level_are_dropped(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "logs" / "plugin.log"  # the folder is created on first use
    log = PluginLog(path=str(path), level="info")
    log.debug("hidden")
    log.info("shown", command="ADD")
    log.close()
    (record,) = _lines(path)
    assert (record["level"], record["msg"], record["command"], record["caller"]) == (
        "info", "shown", "ADD", "aws-cni",
    )  # fmt: skip


def test_a_full_file_is_rotated_keeping_backup_count(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "plugin.log"
    for n in range(BACKUP_COUNT + 2):
        log = PluginLog(path=str(path), max_bytes=64)  # each call opens the file as a CNI call does
        log.info(f"call {n}", padding="x" * 80)  # one line already exceeds the limit
        log.close()
    assert [r["msg"] for r in _lines(path)] == [f"call {BACKUP_COUNT + 1}"]
    for k in range(1, BACKUP_COUNT + 1):
        assert [r["msg"] for r in _lines(path.with_name(f"plugin.log.{k}"))] == [
            f"call {BACKUP_COUNT + 1 - k}"
        ]
    assert not path.with_name(f"plugin.log.{BACKUP_COUNT + 1}").exists()


def test_a_small_file_is_appended_to(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "plugin.log"
    for n in range(3):
        log = PluginLog(path=str(path))
        log.info(f"call {n}")
        log.close()
    assert [r["msg"] for r in _lines(path)] == ["call 0", "call 1", "call 2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugin.log"]
