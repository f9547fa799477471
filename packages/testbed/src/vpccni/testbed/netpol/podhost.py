"""A node namespace with pods wired exactly as ipamd wires them (networkutils' `PodWiring`), for tests of the
network policy agent's kernel side without the rest of the testbed.

    with PodHost(tag="np") as host:
        a = host.add_pod(namespace="x", name="a", ip="10.1.0.10")
        tables = NftPolicyTables(runner=host.runner)

Every namespace is named `vnp-<tag>-<unique>-...` and deleted by `close()`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from ipaddress import IPv4Address

from vpccni.networkutils.commands import ToolRunner
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.netns import ThreadNetnsNetlink
from vpccni.networkutils.pod import PodInterface, PodWiring
from vpccni.testbed.datapath import namespaces as ns


@dataclass(frozen=True, kw_only=True)
class HostedPod:
    namespace: str
    name: str
    netns: str
    ip: IPv4Address
    veth: str


class PodHost:
    def __init__(self, *, tag: str = "np") -> None:
        self._prefix = f"vnp-{tag}-{secrets.token_hex(3)}"
        self.node = f"{self._prefix}-node"
        self._made: list[str] = []
        self.pods: list[HostedPod] = []
        self.runner = ToolRunner(netns=self.node)

    def start(self) -> PodHost:
        ns.create_netns(self.node)
        self._made.append(self.node)
        ns.exec_in_netns(self.node, ["ip", "link", "set", "lo", "up"])
        ns.set_sysctls(self.node, {"net.ipv4.ip_forward": "1"})
        return self

    def add_pod(self, *, namespace: str, name: str, ip: str) -> HostedPod:
        netns = f"{self._prefix}-{len(self.pods)}"
        ns.create_netns(netns)
        self._made.append(netns)
        ns.exec_in_netns(netns, ["ip", "link", "set", "lo", "up"])
        spec = PodInterface(host_veth=host_veth_name(namespace, name), ip=IPv4Address(ip))
        node_fd = os.open(ns.netns_path(self.node), os.O_RDONLY | os.O_CLOEXEC)
        pod_fd = os.open(ns.netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            ThreadNetnsNetlink().run(
                node_fd, lambda nl: PodWiring(host=nl, namespaces=ThreadNetnsNetlink()).wire(pod_fd, spec)
            )
        finally:
            os.close(node_fd)
            os.close(pod_fd)
        pod = HostedPod(namespace=namespace, name=name, netns=netns, ip=IPv4Address(ip), veth=spec.host_veth)
        self.pods.append(pod)
        return pod

    def remove_pod(self, pod: HostedPod) -> None:
        """Delete the pod's namespace (its veth dies with it), as the runtime does after DEL."""
        ns.delete_netns(pod.netns)
        self.pods.remove(pod)

    def close(self) -> None:
        ns.delete_all(list(reversed(self._made)))
        self._made.clear()

    def __enter__(self) -> PodHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
