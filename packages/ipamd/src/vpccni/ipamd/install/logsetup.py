"""Logging for the install commands: upstream's JSON lines on stdout, where container logs collect them."""

from __future__ import annotations

import logging
import sys

from vpccni.ipamd.logs import JsonFormatter

_OWN = "_vpccni_install_handler"


def configure_stdout_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OWN, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _OWN, True)
    root.addHandler(handler)
    root.setLevel(level)
