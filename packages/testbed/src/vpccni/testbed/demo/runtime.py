"""How the demo makes pods: executing the installed `aws-cni` as a runtime does (the default), or asking a
real containerd's CRI in each node namespace to run pod sandboxes (`--runtime containerd`)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Protocol

from vpccni.testbed.cri import Containerd, CriClient, CriError, PodSpec
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.demo.placement import IPAddress, result_ip
from vpccni.testbed.noderunner import NodeRunner, Pod

log = logging.getLogger(__name__)

ADD_ATTEMPTS = 4  # kubelet keeps retrying a failed sandbox; the demo gives up after a few

Added = tuple[Pod, IPAddress | None, str]  # the pod, its address (None: failed), the error


class PodRuntime(Protocol):
    description: str
    delete_description: str

    def prepare(self, runners: list[NodeRunner]) -> None:
        """Set up every node (after its agent serves and its conflist is installed)."""
        ...

    def run_pod(
        self, runner: NodeRunner, name: str, *, annotations: Mapping[str, str] | None = None
    ) -> Added:
        """Make the pod (with its annotations, which reach aws-cni in runtimeConfig) and ADD it."""
        ...

    def remove_pod(self, runner: NodeRunner, pod: Pod) -> str:
        """DEL the pod and remove its sandbox; returns the error ("" when it went well)."""
        ...

    def close(self) -> None: ...


class ShimRuntime:
    """Pods as a runtime makes them: a netns per sandbox, then the installed shim with the CNI environment."""

    description = (
        "Pods are created as a container runtime creates them (containerd's CRI is not used; "
        "`--runtime containerd` does): a network namespace per pod sandbox, then the installed aws-cni "
        "executed with CNI_COMMAND=ADD, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME=eth0, CNI_ARGS=K8S_POD_*, and "
        "the conflist's plugin config (cniVersion and name injected) on stdin."
    )
    delete_description = "CNI DEL through the shim, with prevResult from ADD as libcni sends it"

    def prepare(self, runners: list[NodeRunner]) -> None:
        pass

    def run_pod(
        self, runner: NodeRunner, name: str, *, annotations: Mapping[str, str] | None = None
    ) -> Added:
        pod = runner.create_pod(namespace="default", name=name, annotations=annotations)
        error = ""
        for attempt in range(ADD_ATTEMPTS):
            outcome = runner.add(pod)
            if outcome.ok:
                return pod, result_ip(outcome.document), ""
            error = outcome.error
            runner.delete(pod)  # a failed ADD is followed by DEL before the runtime retries
            time.sleep(0.5 * (attempt + 1))
        return pod, None, error

    def remove_pod(self, runner: NodeRunner, pod: Pod) -> str:
        outcome = runner.delete(pod)
        runner.remove_pod(pod)
        return "" if outcome.ok else outcome.error

    def close(self) -> None:
        pass


class ContainerdRuntime:
    """A private containerd per node namespace running the installed aws-cni through its CRI plugin."""

    description = (
        "Pods are pod sandboxes run by containerd's CRI plugin (RunPodSandbox), one containerd per node "
        "namespace; containerd executes the installed aws-cni from its CNI bin dir with the node's conflist."
    )
    delete_description = "StopPodSandbox and RemovePodSandbox: containerd runs CNI DEL"

    def __init__(self) -> None:
        self._containerd: dict[str, Containerd] = {}
        self._clients: dict[str, CriClient] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def prepare(self, runners: list[NodeRunner]) -> None:
        for runner in runners:
            containerd = Containerd(netns_path=runner.node.netns_path)
            self._containerd[runner.node.name] = containerd
            containerd.start()
            containerd.install_chain(runner.shim, runner.chained())
            containerd.write_conflist(runner.conflist.name, json.loads(runner.conflist.read_text()))
            containerd.wait_network_ready()
            self._clients[runner.node.name] = containerd.client()

    def run_pod(
        self, runner: NodeRunner, name: str, *, annotations: Mapping[str, str] | None = None
    ) -> Added:
        cri = self._clients[runner.node.name]
        spec = PodSpec(name=name, namespace="default", annotations=dict(annotations or {}))
        error = ""
        for attempt in range(ADD_ATTEMPTS):
            try:
                sandbox_id = cri.run_pod(spec)
            except CriError as exc:  # kubelet retries a failed RunPodSandbox
                error = str(exc)
                time.sleep(0.5 * (attempt + 1))
                continue
            status = cri.status(sandbox_id)
            with self._lock:
                self._counter += 1
                alias = f"vpod-{runner.node.netns}-cri-{self._counter}"
            pod = Pod(namespace=spec.namespace, name=name, container_id=sandbox_id, uid=spec.uid, netns=alias)
            if status.netns_path is not None:
                ns.alias_netns(status.netns_path, alias)
            ip = status.ip
            return pod, ip, "" if ip else "the sandbox has no address"
        return Pod(namespace=spec.namespace, name=name, container_id="", uid=spec.uid, netns=""), None, error

    def remove_pod(self, runner: NodeRunner, pod: Pod) -> str:
        # The name must go first: it holds the namespace (and the pod's veth) alive.
        if pod.netns:
            ns.delete_netns(pod.netns)
        if not pod.container_id:
            return ""
        cri = self._clients[runner.node.name]
        try:
            cri.stop_pod(pod.container_id)  # CNI DEL
            cri.remove_pod(pod.container_id)
        except CriError as exc:
            return str(exc)
        return ""

    def close(self) -> None:
        for client in self._clients.values():
            with suppress(Exception):
                client.close()
        self._clients.clear()
        for containerd in self._containerd.values():
            try:
                containerd.stop()
            except Exception:
                log.exception("stopping containerd failed")
        self._containerd.clear()
