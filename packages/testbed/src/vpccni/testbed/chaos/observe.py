"""A node as seen from outside the agent, as a `NodeView`: EC2's ENIs, the checkpoint file, the DEL queue,
the datastore through introspection, and the links, rules and sandbox addresses in namespaces (`ip -j`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from vpccni.awsutils.tags import TAG_INSTANCE_ID
from vpccni.testbed.chaos.ledger import FROM_POD_PRIORITY, TO_POD_PRIORITY, Holding, NodeView, PodRef, Verdict
from vpccni.testbed.cluster import Cluster
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.noderunner import NodeRunner

LINGER_S = 30.0


class Observer:
    """Reads one node's state from every source but the agent's word (introspection is its datastore)."""

    def __init__(self, *, cluster: Cluster, runner: NodeRunner) -> None:
        self._cluster = cluster
        self._runner = runner

    @property
    def del_queue(self) -> str:
        return str(self._runner.run_dir / "del-queue")

    def view(self, looked_at: Iterable[PodRef] = ()) -> NodeView:
        """Everything at once; `looked_at` pods get their sandbox interface read too."""
        attached, unattached = self.ec2()
        return NodeView(
            datastore=self.datastore(),
            checkpoint=self.checkpoint(),
            ec2=attached,
            pod_veths=self.pod_veths(),
            pod_rules=self.pod_rules(),
            sandbox_addresses={p.container_id: self.sandbox_addresses(p) for p in looked_at},
            queued_dels=self.queued_dels(),
            unattached_enis=unattached,
        )

    def datastore(self) -> tuple[Holding, ...]:
        """Every assigned address in introspection's `/v1/enis` (every network card)."""
        out = []
        for card in self._runner.introspect("/v1/enis").values():
            for eni in (card.get("ENIs") or {}).values():
                for cidr in (eni.get("AvailableIPv4Cidrs") or {}).values():
                    for ip, addr in (cidr.get("IPAddresses") or {}).items():
                        meta = addr.get("IPAMMetadata") or {}
                        if int(meta.get("interfacesCount") or 0) > 0:
                            out.append(
                                Holding(
                                    ip=IPv4Address(ip),
                                    namespace=str(meta.get("k8sPodNamespace", "")),
                                    name=str(meta.get("k8sPodName", "")),
                                )
                            )
        return tuple(out)

    def checkpoint(self) -> tuple[Holding, ...]:
        return checkpoint_holdings(
            self._runner.checkpoint.read_bytes() if self._runner.checkpoint.exists() else b""
        )

    def ec2(self) -> tuple[tuple[IPv4Network, ...], tuple[str, ...]]:
        """(secondary addresses and prefixes on the instance's attached ENIs, ids of its unattached ENIs)."""
        instance_id = self._runner.node.instance.instance_id
        client = self._cluster.cloud.ec2_client()
        attached = client.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
        )["NetworkInterfaces"]
        nets: list[IPv4Network] = []
        for eni in attached:
            nets += [
                IPv4Network(f"{a['PrivateIpAddress']}/32")
                for a in eni["PrivateIpAddresses"]
                if not a.get("Primary")
            ]
            nets += [IPv4Network(p["Ipv4Prefix"]) for p in eni.get("Ipv4Prefixes", [])]
        tagged = client.describe_network_interfaces(
            Filters=[
                {"Name": f"tag:{TAG_INSTANCE_ID}", "Values": [instance_id]},
                {"Name": "status", "Values": ["available"]},
            ]
        )["NetworkInterfaces"]
        return tuple(nets), tuple(sorted(e["NetworkInterfaceId"] for e in tagged))

    def eni_leftovers(self) -> tuple[str, ...]:
        """The node's ENIs nobody will tidy up: created and never attached, or attached and unknown to the
        agent (an attach that completed late and was never adopted). The node holds no unmanaged ENIs."""
        _, unattached = self.ec2()
        attached = self._cluster.cloud.ec2_client().describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [self._runner.node.instance.instance_id]}]
        )["NetworkInterfaces"]
        known = {
            eni for card in self._runner.introspect("/v1/enis").values() for eni in card.get("ENIs") or {}
        }
        strays = sorted({e["NetworkInterfaceId"] for e in attached} - known)
        return tuple([f"{e} (created, never attached)" for e in unattached] +
                     [f"{e} (attached, unknown to the agent)" for e in strays])  # fmt: skip

    def pod_veths(self) -> frozenset[str]:
        """Host ends of pod veths: every veth in the node namespace but the testbed's ENI links (`ethN`)."""
        links = _ip_json(self._runner.node.netns, ["link", "show", "type", "veth"])
        return frozenset(str(link["ifname"]) for link in links if not str(link["ifname"]).startswith("eth"))

    def pod_rules(self) -> tuple[tuple[int, IPv4Address], ...]:
        out = []
        for rule in _ip_json(self._runner.node.netns, ["-4", "rule", "show"]):
            prio = int(rule.get("priority", -1))
            key = {TO_POD_PRIORITY: "dst", FROM_POD_PRIORITY: "src"}.get(prio)
            value = str(rule.get(key, "")) if key else ""
            if value and value != "all":
                out.append((prio, IPv4Interface(value).ip))
        return tuple(out)

    def sandbox_addresses(self, pod: PodRef) -> frozenset[IPv4Address]:
        """IPv4 addresses on the pod's interface in its sandbox; empty when the sandbox or link is gone."""
        if not pod.netns or not os.path.exists(ns.netns_path(pod.netns)):
            return frozenset()
        links = _ip_json(pod.netns, ["-4", "addr", "show"])
        return frozenset(
            IPv4Address(a["local"])
            for link in links
            if link.get("ifname") == pod.ifname
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        )

    def queued_dels(self) -> frozenset[str]:
        return queued_container_ids(self.del_queue)


def settled(check: Callable[[], Verdict], *, timeout_s: float = LINGER_S) -> Verdict:
    """`check()`, again while it finds anything, for up to `timeout_s`: the kernel destroys a deleted
    sandbox's namespace, and the veth in it, asynchronously (seconds, on a busy machine). What is still
    there after that is real."""
    deadline = time.monotonic() + timeout_s
    verdict = check()
    while not verdict.clean and time.monotonic() < deadline:
        time.sleep(0.25)
        verdict = check()
    return verdict


def checkpoint_holdings(data: bytes) -> tuple[Holding, ...]:
    """The allocations of an upstream `vpc-cni-ipam/1` checkpoint (empty for no file or no allocations)."""
    if not data:
        return ()
    doc = json.loads(data)
    return tuple(
        Holding(
            ip=IPv4Address(a["ipv4"]),
            namespace=str((a.get("metadata") or {}).get("k8sPodNamespace", "")),
            name=str((a.get("metadata") or {}).get("k8sPodName", "")),
            container_id=str(a.get("containerID", "")),
            ifname=str(a.get("ifName", "")),
        )
        for a in doc.get("allocations") or []
        if a.get("ipv4")
    )


def queued_container_ids(directory: str) -> frozenset[str]:
    """Container ids of the DELs waiting in the shim's on-disk queue (unreadable entries are skipped)."""
    out = set()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return frozenset()
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                out.add(str(json.load(f).get("containerID", "")))
        except (OSError, ValueError):
            continue
    return frozenset(out)


def _ip_json(netns: str, args: list[str]) -> list[dict[str, Any]]:
    out = ns.exec_in_netns(netns, ["ip", "-j", *args])
    return list(json.loads(out)) if out.strip() else []
