"""The connectivity matrix the demo tests with real packets: pod to pod on one node and across nodes, pod
to a VPC host, pod to the internet through the node's SNAT. Each probe is a TCP echo that reports the source
address the far end saw, so address preservation inside the VPC and SNAT outside it are both checked.

IPv6 pods (`--ipv6`) keep their address to the VPC host and the internet alike (IPv6 has no SNAT); their
IPv4 traffic goes out through egress-cni's v4if0 as the node's IPv4 address. With `--v6-egress`, IPv4 pods
reach the IPv6 internet through v6if0 as the node's IPv6 address."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vpccni.testbed.cluster import Cluster
from vpccni.testbed.datapath.probes import EchoServer, ping, tcp_echo
from vpccni.testbed.demo.placement import IPAddress, PlacedPod


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    kind: str
    source: str
    target: str
    expected_source: IPAddress
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
    ip: IPAddress,
    label: str,
    expected: IPAddress,
) -> ProbeResult:
    with EchoServer(netns=netns, ip=ip) as server:
        seen = tcp_echo(src.pod.netns, ip, server.port)
    return ProbeResult(
        kind=kind, source=src.label, target=label, expected_source=expected, seen_source=seen, ping_ok=None
    )


def plan_and_run(
    cluster: Cluster, placed: list[PlacedPod], *, egress: int | None = None
) -> list[ProbeResult]:
    """The matrix; `egress` is the family egress-cni gives pods (4 in an IPv6 cluster, 6 with V6 egress)."""
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
        v6 = pods[0].ip.version == 6
        vpc_host = cluster.vpc_host_ip6 if v6 else cluster.vpc_host_ip
        assert vpc_host is not None
        for src in {
            id(p): p for p in (_pick(pods, secondary_first=True)[0], _pick(pods, secondary_first=False)[0])
        }.values():
            results.append(
                _pod_to_host(
                    "pod -> VPC host",
                    src,
                    netns=router.vpc_host_netns,
                    ip=vpc_host,
                    label=f"VPC host {vpc_host}",
                    expected=src.ip,
                )
            )
        src = _pick(pods, secondary_first=True)[0]
        instance = src.runner.node.instance
        internet = cluster.internet_ip6 if v6 else cluster.internet_ip
        assert internet is not None
        results.append(
            _pod_to_host(
                "pod -> internet (IPv6, not translated)" if v6 else "pod -> internet (SNAT)",
                src,
                netns=router.internet_netns,
                ip=internet,
                label=f"internet {internet}",
                expected=src.ip if v6 else instance.primary_ip,
            )
        )
        other = cluster.internet_ip if egress == 4 else cluster.internet_ip6 if egress == 6 else None
        node_ip = instance.primary_ip if egress == 4 else instance.primary_ipv6
        if other is not None and node_ip is not None:
            results.append(
                _pod_to_host(
                    f"pod -> internet IPv{egress} (egress-cni SNAT)",
                    src,
                    netns=router.internet_netns,
                    ip=other,
                    label=f"internet {other}",
                    expected=node_ip,
                )
            )
    return results
