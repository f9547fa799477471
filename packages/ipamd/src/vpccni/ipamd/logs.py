"""Logging for the ipamd process: JSON lines like upstream's zap logger, to stdout, stderr or a rotated file.

Only the entry point calls `configure_logging(options)`; every other module just uses
`logging.getLogger(__name__)`. Files rotate like upstream's lumberjack settings: 100 MB, 5 backups.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 100 * 1024 * 1024
BACKUP_COUNT = 5

# Upstream level names (AWS_VPC_K8S_CNI_LOGLEVEL) → logging levels; FATAL has no Python twin.
LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}
_ZAP_LEVEL = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
_OWN = "_vpccni_handler"  # marks the handler we installed, so reconfiguring replaces it


@dataclass(frozen=True, kw_only=True)
class LogOptions:
    level: str = "DEBUG"  # AWS_VPC_K8S_CNI_LOGLEVEL (a key of LEVELS)
    file: str = "stderr"  # AWS_VPC_K8S_CNI_LOG_FILE: stdout, stderr or a path


class JsonFormatter(logging.Formatter):
    """One JSON object per line: level, ts (RFC 3339, UTC), caller, logger, msg (and error on exceptions)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "level": _ZAP_LEVEL.get(record.levelno, record.levelname.lower()),
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "caller": f"{record.module}.py:{record.lineno}",
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def make_handler(log_file: str) -> logging.Handler:
    """A handler for `stdout`, `stderr` or a file path (directories are created; the file rotates)."""
    if log_file == "stdout":
        return logging.StreamHandler(sys.stdout)
    if log_file == "stderr":
        return logging.StreamHandler(sys.stderr)
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    return logging.handlers.RotatingFileHandler(
        log_file, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
    )


def configure_logging(options: LogOptions, *, logger: logging.Logger | None = None) -> logging.Handler:
    """Send `logger` (the root logger by default) to AWS_VPC_K8S_CNI_LOG_FILE at AWS_VPC_K8S_CNI_LOGLEVEL."""
    target = logger if logger is not None else logging.getLogger()
    for old in [h for h in target.handlers if getattr(h, _OWN, False)]:
        target.removeHandler(old)
        old.close()
    handler = make_handler(options.file)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _OWN, True)
    target.addHandler(handler)
    target.setLevel(LEVELS[options.level])
    return handler
