"""`--multi-nic`: nodes of a two-card instance type with ENABLE_MULTI_NIC=true, and on each a pod annotated
`k8s.amazonaws.com/nicConfig: multi-nic-attachment` beside the ordinary demo pods.

The pod's interfaces are read from inside its network namespace (whichever runtime made it) and joined with
ipamd's introspection (which card, ENI and table hold each address). Each interface then sends real packets
to the VPC host from its own address: the far end must see that address, which it only does when the packet
left through that card's ENI (the VPC's source/destination check drops it anywhere else).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from vpccni.cniplugin.netconf import MULTI_NIC_ANNOTATION, MULTI_NIC_VALUE
from vpccni.ipamd.cli.introspect import pod_rows
from vpccni.ipamd.cli.tables import render_table
from vpccni.testbed.cluster import Cluster
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, tcp_echo
from vpccni.testbed.ec2.instance_types import limits_for
from vpccni.testbed.noderunner import NodeRunner, Pod

INSTANCE_TYPE = "hpc7a.12xlarge"  # two network cards of two ENIs each: the smallest with several cards
SETTINGS = {"ENABLE_MULTI_NIC": "true"}
ANNOTATIONS = {MULTI_NIC_ANNOTATION: MULTI_NIC_VALUE}
POD_NAME = "trainer"


def instance_type_error(instance_type: str) -> str:
    """Why `instance_type` cannot show multi-NIC ("" when it can)."""
    cards = limits_for(instance_type).enis_per_card
    if len(cards) > 1:
        return ""
    return (
        f"--multi-nic needs an instance type with several network cards; {instance_type} has one "
        f"(e.g. {INSTANCE_TYPE}, c6in.32xlarge, p5.48xlarge)"
    )


@dataclass(frozen=True, kw_only=True)
class InterfaceCheck:
    node: str
    pod: str
    interface: str
    address: ipaddress.IPv4Address
    card: int  # -1: ipamd does not list the address
    eni_id: str
    route_table: int
    seen_source: str | None

    @property
    def ok(self) -> bool:
        return self.card >= 0 and self.seen_source == str(self.address)


def pod_interfaces(pod: Pod) -> list[tuple[str, ipaddress.IPv4Address]]:
    """(interface, IPv4 address) inside the pod's namespace, in interface order (lo left out)."""
    links = json.loads(ns.exec_in_netns(pod.netns, ["ip", "-j", "-4", "addr", "show"]) or "[]")
    return [
        (str(link["ifname"]), ipaddress.IPv4Address(a["local"]))
        for link in links
        if link.get("ifname") != "lo"
        for a in link.get("addr_info", [])
    ]


def check_pod(cluster: Cluster, runner: NodeRunner, pod: Pod) -> list[InterfaceCheck]:
    """Each interface of the pod, where ipamd placed its address, and what the VPC host saw from it."""
    rows = {r.ip: r for r in pod_rows(runner.introspect("/v1/enis")) if r.name == pod.name}
    router = cluster.datapath.router
    checks = []
    with EchoServer(netns=router.vpc_host_netns, ip=cluster.vpc_host_ip) as server:
        for ifname, address in pod_interfaces(pod):
            row = rows.get(str(address))
            checks.append(
                InterfaceCheck(
                    node=runner.node.name,
                    pod=pod.name,
                    interface=ifname,
                    address=address,
                    card=row.network_card if row else -1,
                    eni_id=row.eni_id if row else "?",
                    route_table=row.route_table if row else -1,
                    seen_source=tcp_echo(pod.netns, cluster.vpc_host_ip, server.port, source=address),
                )
            )
    return checks


def failures(checks: list[InterfaceCheck], *, cards: int) -> list[str]:
    out = [
        f"multi-NIC {c.node}/{c.pod} {c.interface} {c.address}: VPC host saw {c.seen_source or 'nothing'}"
        for c in checks
        if not c.ok
    ]
    for node in sorted({c.node for c in checks}):
        got = sorted({c.card for c in checks if c.node == node})
        if got != list(range(cards)):
            out.append(f"multi-NIC pod on {node}: interfaces on cards {got}, expected one on each of {cards}")
    return out


def table(checks: list[InterfaceCheck]) -> str:
    rows = [
        (
            "PASS" if c.ok else "FAIL",
            f"{c.node}/{c.pod}",
            c.interface,
            c.address,
            c.card,
            c.eni_id,
            "main" if c.route_table == 254 else c.route_table,
            c.seen_source or "no answer",
        )
        for c in checks
    ]
    return render_table(
        ("", "POD", "INTERFACE", "ADDRESS", "CARD", "ENI", "HOST TABLE", "VPC HOST SAW"), rows
    )
