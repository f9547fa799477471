"""Unix sockets ipamd serves on (`ipamd.sock` for gRPC, `cni.sock` for the aws-cni shim)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def remove_stale_socket(path: str | Path) -> None:
    """A socket left by a previous run is removed; anything else at that path is an operator error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket: remove it or set another VPCCNI_RUN_DIR")
    os.unlink(path)
