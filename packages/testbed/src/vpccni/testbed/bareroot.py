"""A host root file system with nothing in it but a static busybox: no Python, no C library, no loader.

That is what a host without Python (Bottlerocket) offers a CNI plugin, at the strictest: tests install
vpccni's executables into its ``/opt/cni/bin`` as the init container does and run them inside it with
:func:`chroot_argv`, in a private mount namespace where ``/proc`` is mounted as on any host and the paths a
runtime shares with its plugins (pod network namespace files, ipamd's socket, the plugin log) are
bind-mounted at the same paths, so the plugin config a runtime would pass works unchanged.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
# For a person looking around in it; the CNI executables need none of them.
APPLETS = ("sh", "ls", "cat")
LAYOUT = ("bin", "opt/cni/bin", "etc/cni/net.d", "proc", "run/netns", "var/run/aws-node", "tmp")
CNI_BIN = "opt/cni/bin"
# What a program needs from a host that has them: interpreters, dynamic loaders, C libraries.
_HOST_RUNTIME = ("python", "ld-linux", "ld-musl", "libc.so", "libc.musl")
_PT_INTERP = 3


def program_interpreter(path: Path) -> str | None:
    """The dynamic loader an ELF program names (PT_INTERP), None for a static one."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path} is no 64-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _, p_offset = struct.unpack_from("<IIQ", data, phoff + i * phentsize)
        if p_type == _PT_INTERP:
            (p_filesz,) = struct.unpack_from("<Q", data, phoff + i * phentsize + 0x20)
            return data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
    return None


def make_root(path: Path, *, busybox: Path = BUSYBOX) -> Path:
    """The root at `path`: a static busybox with a few applets and the directories a node has."""
    if not busybox.exists():
        raise FileNotFoundError(f"{busybox} is missing: apt-get install busybox-static")
    if program_interpreter(busybox) is not None:
        raise ValueError(f"{busybox} is dynamically linked: the root would need a C library")
    for directory in LAYOUT:
        (path / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, path / "bin" / "busybox")
    for applet in APPLETS:
        (path / "bin" / applet).symlink_to("busybox")
    return path


def host_runtime(root: Path) -> list[Path]:
    """Every interpreter, loader or C library in `root` outside its CNI bin dir (none in a bare root)."""
    cni_bin = root / CNI_BIN
    found = []
    for directory, dirs, files in os.walk(root):
        if Path(directory) == cni_bin:
            dirs.clear()
            continue
        found += [Path(directory) / f for f in files if f.startswith(_HOST_RUNTIME)]
    return sorted(found)


def chroot_argv(
    root: Path, command: Sequence[str], *, binds: Sequence[Path] = (), proc: bool = True
) -> list[str]:
    """Run `command` (a path inside `root`) chrooted in `root`, in a mount namespace of its own with /proc
    (unless `proc` is false) and each of `binds` (recursively: network namespace files are mounts) at the
    same path inside. The host's unshare, mount and chroot do the setting up; only `command` runs inside."""
    mount_proc = 'mount -t proc proc "$root/proc"; ' if proc else ""
    script = (
        f"set -e; root=$1; shift; {mount_proc}"
        'while [ "$1" != -- ]; do mkdir -p "$root$1"; mount --rbind "$1" "$root$1"; shift; done; shift; '
        'exec chroot "$root" "$@"'
    )
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", script, "sh", str(root), *(str(b) for b in binds), "--", *command,
    ]  # fmt: skip
