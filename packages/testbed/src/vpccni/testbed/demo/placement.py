"""Where each demo pod landed: its node, address, ENI, device and route table (from ipamd's introspection)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from vpccni.ipamd.cli.introspect import pod_rows
from vpccni.testbed.noderunner import NodeRunner, Pod

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True)
class PlacedPod:
    pod: Pod
    runner: NodeRunner
    ip: IPAddress
    eni_id: str
    device_number: int
    route_table: int

    @property
    def label(self) -> str:
        return f"{self.runner.node.name}/{self.pod.name} ({self.ip}, device {self.device_number})"


def place(runner: NodeRunner, pods: list[tuple[Pod, IPAddress]]) -> list[PlacedPod]:
    """Join the pods' CNI results with the node's `/v1/enis` (matched by address and pod name)."""
    rows = {(r.ip, r.namespace, r.name): r for r in pod_rows(runner.introspect("/v1/enis"))}
    placed = []
    for pod, ip in pods:
        row = rows.get((str(ip), pod.namespace, pod.name))
        placed.append(
            PlacedPod(
                pod=pod,
                runner=runner,
                ip=ip,
                eni_id=row.eni_id if row else "?",
                device_number=row.device_number if row else -1,
                route_table=row.route_table if row else -1,
            )
        )
    return placed


def result_ip(result: dict[str, object]) -> IPAddress | None:
    """The pod address from a CNI result (`ips[0].address`, a /32 or an IPv6 /128)."""
    ips = result.get("ips")
    if not isinstance(ips, list) or not ips or not isinstance(ips[0], dict):
        return None
    address = ips[0].get("address")
    return ipaddress.ip_interface(str(address)).ip if address else None
