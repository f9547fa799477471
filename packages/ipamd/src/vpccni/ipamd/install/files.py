"""Atomic file installation into host directories (copy to a temporary name, then rename).

A runtime that execs a plugin or reads a conflist while we install must see the old file or the new one,
never a half-written one: rename(2) within one directory gives exactly that.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

_log = logging.getLogger(__name__)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Write `data` to `path` through `<path>.tmp` and a rename; the directory is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def install_file(src: Path, dst_dir: Path, *, name: str | None = None, mode: int = 0o755) -> Path:
    """Copy `src` into `dst_dir` (as `name`) atomically, as upstream copies `aws-cni` to `<dst>.tmp` first."""
    if not src.is_file():
        raise FileNotFoundError(
            f"{src} is missing: the image is incomplete, rebuild it (deploy/image/build.sh)"
        )
    dst = dst_dir / (name or src.name)
    dst_dir.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    os.replace(tmp, dst)
    _log.info("installed %s", dst)
    return dst


def install_dir(src_dir: Path, dst_dir: Path, *, exclude: Iterable[str] = ()) -> list[Path]:
    """Install every regular file of `src_dir` (sorted, not recursive) except the names in `exclude`."""
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir} is missing: the image is incomplete, rebuild it")
    skip = set(exclude)
    return [
        install_file(entry, dst_dir)
        for entry in sorted(src_dir.iterdir())
        if entry.name not in skip and entry.is_file() and not entry.name.endswith(".tmp")
    ]
