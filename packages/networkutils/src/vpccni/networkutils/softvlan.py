"""802.1Q VLAN links for kernels built without 802.1Q support (no `CONFIG_VLAN_8021Q`, e.g. some microVM
kernels), made of what such kernels still have: a veth pair and two tc BPF classifiers.

The link keeps the VLAN link's name and MAC, so routes, rules and tools see the same host either way:

    <name> (MAC, what the host routes through) <-veth-> <peer>
    frames the host sends out of <name> arrive at <peer>: tag them with the VLAN, send them out of <parent>
    frames tagged with the VLAN arriving at <parent>: untag them, send them out of <peer> (so <name>
    receives them)

On the wire (`parent`) the frames carry a real 802.1Q tag, as from a kernel VLAN link. The programs are held
by tc filters, so the link outlives the process that made it, as a kernel VLAN link does. Deleting the link
takes the veth pair with it; the parent's filter for that VLAN then redirects to nothing (the kernel would
drop such frames too) and is replaced when the VLAN is created again.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct

from . import bpf, rtnl
from .bpf import insn
from .rtnl import NLM_F_CREATE, NLM_F_EXCL, NetlinkError, attr_nest, attr_str, attr_u32

RTM_NEWQDISC, RTM_NEWTFILTER, RTM_DELTFILTER = 36, 44, 45
TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
TC_H_CLSACT = 0xFFFFFFF1
CLSACT_HANDLE = 0xFFFF0000
CLSACT_INGRESS = 0xFFFFFFF2
ETH_P_ALL_BE = 0x0300  # htons(ETH_P_ALL): the filter sees every protocol
ETH_P_8021Q_BE = 0x0081  # htons(0x8100), as bpf_skb_vlan_push wants the protocol
PEER_FILTER_PRIORITY = 1
# `struct __sk_buff` offsets (uapi, stable).
SKB_VLAN_PRESENT, SKB_VLAN_TCI = 20, 24
VLAN_VID_MASK = 0x0FFF


def peer_name(name: str) -> str:
    """The hidden end of the soft VLAN link `name` (deterministic, within IFNAMSIZ)."""
    return "sv" + hashlib.sha1(name.encode()).hexdigest()[:12]


def untag_program(vlan_id: int, to_ifindex: int) -> list[bytes]:
    """At the parent's ingress: frames tagged `vlan_id` lose the tag and go out of `to_ifindex` (the peer);
    every other frame goes on to the next filter."""
    return [
        insn(bpf.MOV64_REG, 6, 1),  # r6 = skb
        insn(bpf.LDX_MEM_W, 2, 1, SKB_VLAN_PRESENT),
        insn(bpf.JEQ_IMM, 2, 0, 9, 0),  # untagged: next filter
        insn(bpf.LDX_MEM_W, 2, 1, SKB_VLAN_TCI),
        insn(bpf.AND64_IMM, 2, 0, 0, VLAN_VID_MASK),
        insn(bpf.JNE_IMM, 2, 0, 6, vlan_id),  # another VLAN: next filter
        insn(bpf.MOV64_REG, 1, 6),
        insn(bpf.CALL, imm=bpf.HELPER_SKB_VLAN_POP),
        insn(bpf.MOV64_IMM, 1, imm=to_ifindex),
        insn(bpf.MOV64_IMM, 2, imm=0),
        insn(bpf.CALL, imm=bpf.HELPER_REDIRECT),  # returns TC_ACT_REDIRECT
        insn(bpf.EXIT),
        insn(bpf.MOV64_IMM, 0, imm=bpf.TC_ACT_UNSPEC),
        insn(bpf.EXIT),
    ]


def tag_program(vlan_id: int, to_ifindex: int) -> list[bytes]:
    """At the peer's ingress: every frame gets the VLAN tag and goes out of `to_ifindex` (the parent)."""
    return [
        insn(bpf.MOV64_REG, 6, 1),
        insn(bpf.MOV64_IMM, 2, imm=ETH_P_8021Q_BE),
        insn(bpf.MOV64_IMM, 3, imm=vlan_id),
        insn(bpf.CALL, imm=bpf.HELPER_SKB_VLAN_PUSH),
        insn(bpf.MOV64_IMM, 1, imm=to_ifindex),
        insn(bpf.MOV64_IMM, 2, imm=0),
        insn(bpf.CALL, imm=bpf.HELPER_REDIRECT),
        insn(bpf.EXIT),
    ]


def _ensure_clsact(sock: rtnl.RtnlSocket, ifindex: int) -> None:
    body = TCMSG.pack(0, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0) + attr_str(TCA_KIND, "clsact")
    try:
        sock.request(RTM_NEWQDISC, body, flags=NLM_F_CREATE | NLM_F_EXCL)
    except NetlinkError as exc:
        if exc.errno != errno.EEXIST:
            raise


def _set_ingress_filter(
    sock: rtnl.RtnlSocket, ifindex: int, *, priority: int, program: list[bytes], name: str
) -> None:
    """`tc filter replace dev IFINDEX ingress pref PRIORITY bpf direct-action` with `program`."""
    _ensure_clsact(sock, ifindex)
    header = TCMSG.pack(0, ifindex, 1, CLSACT_INGRESS, (priority << 16) | ETH_P_ALL_BE)
    try:
        sock.request(RTM_DELTFILTER, TCMSG.pack(0, ifindex, 0, CLSACT_INGRESS, (priority << 16)))
    except NetlinkError as exc:
        if exc.errno not in rtnl.GONE | {errno.EINVAL}:
            raise
    fd = bpf.load_sched_cls(program, name)
    try:
        options = attr_nest(
            TCA_OPTIONS,
            attr_u32(TCA_BPF_FD, fd),
            attr_str(TCA_BPF_NAME, name),
            attr_u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT),
        )
        sock.request(
            RTM_NEWTFILTER, header + attr_str(TCA_KIND, "bpf") + options, flags=NLM_F_CREATE | NLM_F_EXCL
        )
    finally:
        os.close(fd)  # the filter holds the program now


def wire_soft_vlan(sock: rtnl.RtnlSocket, *, parent_index: int, peer_index: int, vlan_id: int) -> None:
    """Attach both programs once the veth pair (`name` <-> `peer_name(name)`) exists, up."""
    _set_ingress_filter(
        sock,
        parent_index,
        priority=vlan_id,
        program=untag_program(vlan_id, peer_index),
        name=f"untag{vlan_id}",
    )
    _set_ingress_filter(
        sock,
        peer_index,
        priority=PEER_FILTER_PRIORITY,
        program=tag_program(vlan_id, parent_index),
        name=f"tag{vlan_id}",
    )


def unsupported(exc: NetlinkError) -> bool:
    """Whether the kernel refused a `vlan` link for lack of 802.1Q support."""
    return exc.errno == errno.EOPNOTSUPP
