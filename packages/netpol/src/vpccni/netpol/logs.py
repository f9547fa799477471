"""Logging for the agent and controller processes (only their entry points call `configure`)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(*, level: str, log_file: str = "stdout") -> None:
    """Log at `level` to standard output or to a file that rotates at 100 MB keeping 5 (as ipamd's)."""
    if log_file in ("", "stdout"):
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=100 * 1024 * 1024, backupCount=5)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
