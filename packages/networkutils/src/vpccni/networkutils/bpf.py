"""Just enough eBPF to load a tc classifier: an instruction encoder and `BPF_PROG_LOAD` through libc.

Used by `softvlan` only: its programs are a dozen instructions, built here from constants (no compiler, no
object files, no pyroute2). Errors carry the kernel verifier's log.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Sequence

_libc = ctypes.CDLL(None, use_errno=True)
# bpf(2)'s number differs by architecture (the image is built for both).
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SCHED_CLS = 3
_ATTR_SIZE = 128
_LICENSE = b"Apache-2.0"  # vpccni's; the helpers used are not GPL-only

# Opcodes (linux/bpf.h): class | op | source.
MOV64_REG, MOV64_IMM, AND64_IMM = 0xBF, 0xB7, 0x57
LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
JEQ_IMM, JNE_IMM = 0x15, 0x55
CALL, EXIT = 0x85, 0x95

# Helper ids and tc verdicts the programs use.
HELPER_SKB_VLAN_PUSH, HELPER_SKB_VLAN_POP, HELPER_REDIRECT = 18, 19, 23
TC_ACT_UNSPEC = -1  # go on with the next filter


class BpfError(OSError):
    """The kernel refused a BPF program; the message carries the verifier's log."""


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One `struct bpf_insn`: opcode, dst/src registers, 16-bit offset, 32-bit immediate."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def load_sched_cls(program: Sequence[bytes], name: str) -> int:
    """Load a tc classifier (`BPF_PROG_TYPE_SCHED_CLS`) and return its fd (the caller closes it once a
    filter holds the program)."""
    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise BpfError(0, f"no bpf(2) syscall number known for {os.uname().machine}")
    code = ctypes.create_string_buffer(b"".join(program))
    license_ = ctypes.create_string_buffer(_LICENSE)
    log = ctypes.create_string_buffer(1 << 14)
    attr = struct.pack(
        "<IIQQIIQII16s",
        BPF_PROG_TYPE_SCHED_CLS,
        len(program),
        ctypes.addressof(code),
        ctypes.addressof(license_),
        1,  # log level: the verifier explains a refusal
        len(log),
        ctypes.addressof(log),
        0,  # kernel version (only kprobes)
        0,  # flags
        name.encode()[:15],
    )
    buf = ctypes.create_string_buffer(attr, _ATTR_SIZE)
    fd = int(_libc.syscall(number, BPF_PROG_LOAD, buf, _ATTR_SIZE))
    if fd < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"loading BPF program {name} failed: {os.strerror(err)}: {log.value.decode()}")
    return fd
