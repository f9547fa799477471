"""Logging: JSON lines, upstream level names, file/stdout targets, rotation settings, reconfiguration."""

from __future__ import annotations

import json
import logging
import logging.handlers
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from vpccni.ipamd.logs import BACKUP_COUNT, MAX_BYTES, LogOptions, configure_logging


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"vpccni-test-{uuid.uuid4()}")
    log.propagate = False
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def test_json_lines_to_a_rotating_file(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "aws-routed-eni" / "ipamd.log"
    handler = configure_logging(LogOptions(file=str(path), level="INFO"), logger=logger)
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert handler.maxBytes == MAX_BYTES == 100 * 1024 * 1024 and handler.backupCount == BACKUP_COUNT == 5
    logger.debug("hidden")
    logger.info("assigned %s", "10.0.0.5")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    handler.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["level"], e["msg"]) for e in lines] == [("info", "assigned 10.0.0.5"), ("error", "failed")]
    assert lines[0]["ts"].endswith("Z") and lines[0]["caller"].startswith("test_logs.py:")
    assert "RuntimeError: boom" in lines[1]["error"]


def test_stdout_and_level_names(capsys: pytest.CaptureFixture[str], logger: logging.Logger) -> None:
    configure_logging(LogOptions(file="stdout", level="WARN"), logger=logger)
    logger.info("hidden")
    logger.warning("careful")
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["level"] for line in out] == ["warn"]


def test_reconfiguring_replaces_our_handler_only(tmp_path: Path, logger: logging.Logger) -> None:
    foreign = logging.NullHandler()
    logger.addHandler(foreign)
    configure_logging(LogOptions(file=str(tmp_path / "a.log")), logger=logger)
    configure_logging(LogOptions(file="stderr", level="FATAL"), logger=logger)
    ours = [h for h in logger.handlers if getattr(h, "_vpccni_handler", False)]
    assert foreign in logger.handlers and len(ours) == 1
    assert not isinstance(ours[0], logging.FileHandler)  # the file handler was replaced
    assert logger.level == logging.CRITICAL
