"""A small typed client for the pod-sandbox part of the CRI RuntimeService (what kubelet calls), over the
generated stubs of PyPI's `container-runtime-interface-api` (`cri_api.v1`).

RunPodSandbox is where containerd runs the CNI ADD; StopPodSandbox and RemovePodSandbox run DEL.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CriError(RuntimeError):
    """A CRI call failed; the message carries containerd's own words (often the CNI plugin's error)."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class PortProtocol(enum.Enum):
    TCP = cri.TCP
    UDP = cri.UDP
    SCTP = cri.SCTP


@dataclass(frozen=True, kw_only=True)
class PortMapping:
    """A pod's `hostPort`: traffic to the node's `host_port` reaches the pod's `container_port`."""

    container_port: int
    host_port: int
    protocol: PortProtocol = PortProtocol.TCP
    host_ip: str = ""


@dataclass(frozen=True, kw_only=True)
class PodSpec:
    """What kubelet tells the runtime about a pod when it asks for its sandbox."""

    name: str
    namespace: str = "default"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempt: int = 0
    port_mappings: tuple[PortMapping, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PodSandbox:
    """A sandbox as PodSandboxStatus reports it."""

    id: str
    name: str
    namespace: str
    uid: str
    ready: bool
    ip: IPAddress | None
    additional_ips: tuple[IPAddress, ...]
    # From the verbose info: the sandbox process and the netns mount CNI was given (gone once stopped).
    pid: int | None
    netns_path: Path | None


class CriClient:
    """RuntimeService calls on containerd's socket. The channel opens on first use; `close()` ends it."""

    def __init__(self, *, socket: Path, cgroup_parent: str = "", timeout: float = 60.0) -> None:
        self._target = f"unix://{socket}"
        self._cgroup_parent = cgroup_parent
        self._timeout = timeout
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> str:
        """`runtime_name runtime_version`, e.g. `containerd 1.6.20`."""
        reply = self._call("Version", cri.VersionRequest())
        return f"{reply.runtime_name} {reply.runtime_version}"

    def conditions(self) -> dict[str, bool]:
        """Status conditions by type: `RuntimeReady`, `NetworkReady` (a CNI config was loaded)."""
        reply = self._call("Status", cri.StatusRequest())
        return {c.type: c.status for c in reply.status.conditions}

    def cni_networks(self) -> dict[str, str]:
        """The CNI networks CRI has loaded for pods, by network name -> the config source it read (verbose
        Status; the `lo` network CRI adds itself is left out)."""
        reply = self._call("Status", cri.StatusRequest(verbose=True))
        loaded = json.loads(reply.info.get("cniconfig", "{}") or "{}")
        return {
            str(net["Config"]["Name"]): str(net["Config"].get("Source", ""))
            for net in loaded.get("Networks") or []
            if net.get("IFName") != "lo"
        }

    def run_pod(self, spec: PodSpec) -> str:
        """RunPodSandbox (CNI ADD inside); returns the sandbox id."""
        config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(
                name=spec.name, namespace=spec.namespace, uid=spec.uid, attempt=spec.attempt
            ),
            hostname=spec.name,
            port_mappings=[
                cri.PortMapping(
                    protocol=m.protocol.value,
                    container_port=m.container_port,
                    host_port=m.host_port,
                    host_ip=m.host_ip,
                )
                for m in spec.port_mappings
            ],
            labels=dict(spec.labels),
            annotations=dict(spec.annotations),
            linux=cri.LinuxPodSandboxConfig(cgroup_parent=self._cgroup_parent),
        )
        reply = self._call("RunPodSandbox", cri.RunPodSandboxRequest(config=config))
        return str(reply.pod_sandbox_id)

    def status(self, sandbox_id: str) -> PodSandbox:
        """PodSandboxStatus, verbose (for the sandbox pid and its netns path)."""
        request = cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        reply = self._call("PodSandboxStatus", request)
        st = reply.status
        info = json.loads(reply.info.get("info", "{}"))
        pid = int(info.get("pid") or 0) or None
        netns = None
        for namespace in info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", []):
            if namespace.get("type") == "network" and namespace.get("path"):
                netns = Path(namespace["path"])
        return PodSandbox(
            id=st.id,
            name=st.metadata.name,
            namespace=st.metadata.namespace,
            uid=st.metadata.uid,
            ready=st.state == cri.SANDBOX_READY,
            ip=ipaddress.ip_address(st.network.ip) if st.network.ip else None,
            additional_ips=tuple(ipaddress.ip_address(a.ip) for a in st.network.additional_ips),
            pid=pid,
            netns_path=netns if info.get("netNamespaceClosed") is not True else None,
        )

    def stop_pod(self, sandbox_id: str) -> None:
        """StopPodSandbox: kills the sandbox, runs CNI DEL, and closes the netns."""
        self._call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))

    def remove_pod(self, sandbox_id: str) -> None:
        """RemovePodSandbox: forgets a stopped sandbox (containerd runs DEL once more, with no netns)."""
        self._call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))

    def list_pods(self) -> list[str]:
        """Ids of every sandbox containerd knows (any state)."""
        reply = self._call("ListPodSandbox", cri.ListPodSandboxRequest())
        return [str(item.id) for item in reply.items]

    def _call(self, method: str, request: Any) -> Any:
        if self._stub is None:
            self._channel = grpc.insecure_channel(self._target)
            self._stub = cri_grpc.RuntimeServiceStub(self._channel)
        try:
            return getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise CriError(
                f"CRI {method} on {self._target} failed ({code.name if code else 'no status'}): {details}",
                code=code,
            ) from exc
