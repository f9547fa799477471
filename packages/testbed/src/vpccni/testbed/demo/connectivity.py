"""The connectivity matrix the demo tests with real packets: pod to pod on one node and across nodes, pod
to a VPC host, pod to the internet through the node's SNAT. Each probe is a TCP echo that reports the source
address the far end saw, so address preservation inside the VPC and SNAT outside it are both checked."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from vpccni.testbed.cluster import Cluster
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo
from vpccni.testbed.demo.placement import PlacedPod


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    kind: str
    source: str
    target: str
    expected_source: ipaddress.IPv4Address
    seen_source: str | None
    ping_ok: bool | None  # None: not pinged

    @property
    def ok(self) -> bool:
        return self.seen_source == str(self.expected_source) and self.ping_ok is not False


def _pick(pods: Iterable[PlacedPod], *, secondary_first: bool) -> list[PlacedPod]:
    """Pods ordered so that secondary-ENI pods (the interesting routing case) come first, or last."""
    return sorted(pods, key=lambda p: (p.device_number == 0) == secondary_first)


def _pod_to_pod(kind: str, src: PlacedPod, dst: PlacedPod) -> ProbeResult:
    with EchoServer(netns=dst.pod.netns, ip=dst.ip) as server:
        seen = tcp_echo(src.pod.netns, dst.ip, server.port)
    return ProbeResult(
        kind=kind,
        source=src.label,
        target=dst.label,
        expected_source=src.ip,
        seen_source=seen,
        ping_ok=ping(src.pod.netns, dst.ip),
    )


def _pod_to_host(
    kind: str,
    src: PlacedPod,
    *,
    netns: str,
    ip: ipaddress.IPv4Address,
    label: str,
    expected: ipaddress.IPv4Address,
) -> ProbeResult:
    with EchoServer(netns=netns, ip=ip) as server:
        seen = tcp_echo(src.pod.netns, ip, server.port)
    return ProbeResult(
        kind=kind, source=src.label, target=label, expected_source=expected, seen_source=seen, ping_ok=None
    )


def plan_and_run(cluster: Cluster, placed: list[PlacedPod]) -> list[ProbeResult]:
    by_node: dict[str, list[PlacedPod]] = {}
    for p in placed:
        if p.device_number >= 0:
            by_node.setdefault(p.runner.node.name, []).append(p)
    results: list[ProbeResult] = []
    router = cluster.datapath.router
    for pods in by_node.values():
        ordered = _pick(pods, secondary_first=False)  # a primary-ENI pod first, a secondary-ENI pod last
        if len(ordered) >= 2:
            results.append(_pod_to_pod("pod -> pod, same node", ordered[0], ordered[-1]))
            results.append(_pod_to_pod("pod -> pod, same node", ordered[-1], ordered[0]))
    names = sorted(by_node)
    for a, b in zip(names, names[1:] + names[:1], strict=True):
        if a == b:
            continue
        src = _pick(by_node[a], secondary_first=True)[0]
        dst = _pick(by_node[b], secondary_first=True)[0]
        results.append(_pod_to_pod("pod -> pod, across nodes", src, dst))
    for pods in by_node.values():
        for src in {
            id(p): p for p in (_pick(pods, secondary_first=True)[0], _pick(pods, secondary_first=False)[0])
        }.values():
            results.append(
                _pod_to_host(
                    "pod -> VPC host",
                    src,
                    netns=router.vpc_host_netns,
                    ip=cluster.vpc_host_ip,
                    label=f"VPC host {cluster.vpc_host_ip}",
                    expected=src.ip,
                )
            )
        src = _pick(pods, secondary_first=True)[0]
        results.append(
            _pod_to_host(
                "pod -> internet (SNAT)",
                src,
                netns=router.internet_netns,
                ip=cluster.internet_ip,
                label=f"internet {cluster.internet_ip}",
                expected=src.runner.node.instance.primary_ip,
            )
        )
    return results
