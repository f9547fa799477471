"""What the node must hold, from what its CNI callers were told, against what the node shows from outside.

The chaos driver knows which pods got an address (their ADD succeeded and no DEL followed) and which are being
released (a DEL failed, or waits in the DEL queue). `evaluate` compares that with a `NodeView` (the datastore
as introspection shows it, the checkpoint file, EC2, the node's links and rules, each sandbox's interface)
and names every lost, double-assigned or leaked address, veth and rule. Pure: no I/O.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

TO_POD_PRIORITY = 512
FROM_POD_PRIORITY = 1536


@dataclass(frozen=True, kw_only=True)
class PodRef:
    """One attachment as the runtime knows it: the pod, its sandbox (container id, netns) and interface."""

    namespace: str
    name: str
    container_id: str
    ifname: str = "eth0"
    netns: str = ""

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name} ({self.container_id[:12]}, {self.ifname})"


@dataclass(frozen=True, kw_only=True)
class Holding:
    """An address some source says a pod holds. `container_id` is "" where the source scrubs it."""

    ip: IPv4Address
    namespace: str
    name: str
    container_id: str = ""
    ifname: str = ""


@dataclass(frozen=True, kw_only=True)
class NodeView:
    datastore: tuple[Holding, ...]
    checkpoint: tuple[Holding, ...]
    ec2: tuple[IPv4Network, ...]  # secondary addresses (/32) and prefixes on the instance's attached ENIs
    pod_veths: frozenset[str]  # host-side veths of pods in the node namespace
    pod_rules: tuple[tuple[int, IPv4Address], ...]  # (priority, pod address) of the 512 / 1536 rules
    # container id → the IPv4 addresses on the pod's interface inside its sandbox (pods looked at only)
    sandbox_addresses: Mapping[str, frozenset[IPv4Address]] = field(default_factory=dict)
    queued_dels: frozenset[str] = frozenset()  # container ids of DELs waiting in the DEL queue
    unattached_enis: tuple[str, ...] = ()  # the node's ENIs EC2 has created but that are not attached


@dataclass(frozen=True, kw_only=True)
class Finding:
    kind: str  # lost, double, leaked-address, leaked-veth, leaked-rule
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    lost: tuple[Finding, ...] = ()
    double: tuple[Finding, ...] = ()
    leaked_addresses: tuple[Finding, ...] = ()
    leaked_veths: tuple[Finding, ...] = ()
    leaked_rules: tuple[Finding, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.lost + self.double + self.leaked_addresses + self.leaked_veths + self.leaked_rules

    @property
    def clean(self) -> bool:
        return not self.findings


def _owned(ip: IPv4Address, networks: Iterable[IPv4Network]) -> bool:
    return any(ip in net for net in networks)


def _lost_reasons(
    pod: PodRef, ip: IPv4Address, view: NodeView, *, by_name: Mapping[tuple[str, str], set[IPv4Address]],
    by_key: Mapping[tuple[str, str], set[IPv4Address]], veth: str,
) -> list[str]:  # fmt: skip
    reasons = []
    held = by_name.get((pod.namespace, pod.name), set())
    if ip not in held:
        shown = sorted(map(str, held)) or "nothing"
        reasons.append(f"the datastore holds {shown} for it, its ADD answered {ip}")
    recorded = by_key.get((pod.container_id, pod.ifname), set())
    if ip not in recorded:
        reasons.append(f"the checkpoint records {sorted(map(str, recorded)) or 'nothing'} for it")
    if not _owned(ip, view.ec2):
        reasons.append(f"EC2 has {ip} on none of the node's ENIs")
    if veth not in view.pod_veths:
        reasons.append(f"its host veth {veth} is gone")
    seen = view.sandbox_addresses.get(pod.container_id)
    if seen is not None and ip not in seen:
        reasons.append(f"{pod.ifname} in its sandbox has {sorted(map(str, seen)) or 'no address'}")
    return reasons


def _doubles(view: NodeView, live: Mapping[PodRef, IPv4Address]) -> list[Finding]:
    """An address given to two pods: by two ADD answers, in the datastore, in the checkpoint, or an address
    on two ENIs in EC2."""
    sources: tuple[tuple[str, Iterable[tuple[IPv4Address, str]]], ...] = (
        ("answered by ADD to", ((ip, pod.label) for pod, ip in live.items())),
        ("in the datastore", ((h.ip, f"{h.namespace}/{h.name}") for h in view.datastore)),
        ("in the checkpoint", ((h.ip, f"{h.container_id[:12]}/{h.ifname}") for h in view.checkpoint)),
    )
    out: list[Finding] = []
    for where, pairs in sources:
        holders: dict[IPv4Address, list[str]] = defaultdict(list)
        for ip, who in pairs:
            holders[ip].append(who)
        out.extend(
            Finding(kind="double", subject=str(ip), detail=f"{where} {sorted(who)}")
            for ip, who in sorted(holders.items())
            if len(who) > 1
        )
    nets = sorted(view.ec2, key=lambda n: (int(n.network_address), n.prefixlen))
    out.extend(
        Finding(kind="double", subject=f"{a} / {b}", detail="on two ENIs in EC2")
        for a, b in itertools.pairwise(nets)
        if a.overlaps(b)
    )
    return out


def evaluate(
    *,
    live: Mapping[PodRef, IPv4Address],
    pending: Mapping[PodRef, IPv4Address | None],
    view: NodeView,
    veth_name: Callable[[PodRef], str],
) -> Verdict:
    """`live`: pods whose ADD succeeded and that were not deleted, with the address ADD answered.
    `pending`: pods whose release may still be under way (a failed DEL, a DEL in the queue), with the
    address their ADD answered if it did: what they hold is not a leak yet, and not a loss either."""
    by_name: dict[tuple[str, str], set[IPv4Address]] = defaultdict(set)
    for h in view.datastore:
        by_name[(h.namespace, h.name)].add(h.ip)
    by_key: dict[tuple[str, str], set[IPv4Address]] = defaultdict(set)
    for h in view.checkpoint:
        by_key[(h.container_id, h.ifname)].add(h.ip)

    lost = []
    for pod, ip in live.items():
        reasons = _lost_reasons(pod, ip, view, by_name=by_name, by_key=by_key, veth=veth_name(pod))
        if reasons:
            lost.append(Finding(kind="lost", subject=f"{pod.label} {ip}", detail="; ".join(reasons)))

    known: dict[PodRef, IPv4Address | None] = {**pending, **live}
    names = {(p.namespace, p.name) for p in known}
    keys = {(p.container_id, p.ifname) for p in known}
    # A pod being released may hold an address its ADD never answered (the answer was lost): what the
    # node says it holds is not a leak yet either.
    ips = {ip for ip in known.values() if ip is not None}
    ips |= {ip for p in pending for ip in by_name.get((p.namespace, p.name), set())}
    ips |= {ip for p in pending for ip in by_key.get((p.container_id, p.ifname), set())}
    leaked: dict[IPv4Address, Finding] = {}
    for h in view.datastore:
        if (h.namespace, h.name) not in names:
            detail = f"datastore: {h.namespace}/{h.name}"
            leaked.setdefault(h.ip, Finding(kind="leaked-address", subject=str(h.ip), detail=detail))
    for h in view.checkpoint:
        if (h.container_id, h.ifname) not in keys:
            leaked.setdefault(
                h.ip,
                Finding(
                    kind="leaked-address",
                    subject=str(h.ip),
                    detail=f"checkpoint: {h.namespace}/{h.name} ({h.container_id[:12]}, {h.ifname})",
                ),
            )
    expected_veths = {veth_name(p) for p in known}
    veths = tuple(
        Finding(kind="leaked-veth", subject=name, detail="a pod veth no live pod owns")
        for name in sorted(view.pod_veths - expected_veths)
    )
    rules = tuple(
        Finding(kind="leaked-rule", subject=f"{prio} {ip}", detail="a pod rule no live pod owns")
        for prio, ip in sorted(set(view.pod_rules))
        if ip not in ips
    )
    return Verdict(
        lost=tuple(lost),
        double=tuple(_doubles(view, live)),
        leaked_addresses=tuple(leaked[ip] for ip in sorted(leaked)),
        leaked_veths=veths,
        leaked_rules=rules,
    )
