"""Network policy at pod creation: before an ADD is answered, ask the network policy agent to put the pod's
policy in force (`rpc.NPBackend.EnforceNpToPod` on `<run dir>/npa.sock`), as upstream's plugin does after
wiring (`cmd/routed-eni-cni-plugin/cni.go`). ipamd only talks to the agent over its socket.

By `NETWORK_POLICY_ENFORCING_MODE`:
- unset or `none`: no call.
- `standard`: pods are open until a policy selects them, so the call only gets a new pod its known policies
  before it starts; an agent that is down, slow or failing is logged and the ADD goes on.
- `strict`: a pod must not run before the agent has it (denied until a policy selects it). If the agent does
  not confirm in time, the ADD fails with CNI code 11 (try again later) naming the agent's socket, and the
  pod's wiring and address are rolled back; the runtime retries the sandbox.
The call is bounded by `AGENT_TIMEOUT_S` and by the shim's own deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import grpc
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger(__name__)

STRICT = "strict"
STANDARD = "standard"
AGENT_SOCKET = "npa.sock"
# The agent's own wait for the kernel is 5 s (VPCCNI_NETPOL_ENFORCE_TIMEOUT); leave it room to answer.
AGENT_TIMEOUT_S = 6.0


# An agent that starts after ipamd (or restarts) is reached within a second, not after gRPC's default
# reconnect back-off of up to two minutes.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class PolicyAgent(Protocol):
    def enforce(self, *, namespace: str, name: str, mode: str, timeout_s: float, wait: bool) -> bool:
        """EnforceNpToPod; True when the agent confirms. Raises grpc.RpcError when it cannot be reached
        (at once, or with `wait` after waiting up to `timeout_s` for it to come up)."""
        ...


class GrpcPolicyAgent:
    """`PolicyAgent` over gRPC on the agent's Unix socket; one channel, opened on first use."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._lock = threading.Lock()
        self._stub: Any = None

    def _client(self) -> Any:
        with self._lock:
            if self._stub is None:
                channel = grpc.insecure_channel(f"unix:{self.socket_path}", options=CHANNEL_OPTIONS)
                self._stub = rpc_pb2_grpc.NPBackendStub(channel)
            return self._stub

    def enforce(self, *, namespace: str, name: str, mode: str, timeout_s: float, wait: bool) -> bool:
        request = rpc_pb2.EnforceNpRequest(
            K8S_POD_NAME=name, K8S_POD_NAMESPACE=namespace, NETWORK_POLICY_MODE=mode, InterfaceCount=1
        )
        reply = self._client().EnforceNpToPod(request, timeout=timeout_s, wait_for_ready=wait)
        return bool(reply.Success)


class PolicyAdmission:
    """What ADD asks of the agent in `mode` (`standard` or `strict`)."""

    def __init__(
        self,
        *,
        mode: str,
        agent: PolicyAgent,
        where: str,
        timeout_s: float = AGENT_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self._agent = agent
        self._where = where
        self._timeout_s = timeout_s
        self._monotonic = monotonic

    def admit(self, *, namespace: str, name: str, answer_by: float) -> None:
        """Return when the pod may start; raise CNIError (strict mode) when it may not yet."""
        timeout = max(0.1, min(self._timeout_s, answer_by - self._monotonic()))
        try:
            # Only strict mode waits for an agent that is starting: standard mode never holds a pod for it.
            confirmed = self._agent.enforce(
                namespace=namespace, name=name, mode=self.mode, timeout_s=timeout, wait=self.mode == STRICT
            )
            problem = "" if confirmed else f"did not confirm the pod's policy within {timeout:.1f} s"
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            problem = f"is not reachable ({code.name if code else 'error'}: {_details(exc)})"
        if not problem:
            return
        if self.mode != STRICT:
            log.warning("network policy agent at %s %s; %s/%s starts open (standard mode)",
                        self._where, problem, namespace, name)  # fmt: skip
            return
        raise CNIError(
            ErrorCode.TRY_AGAIN_LATER,
            f"network policy agent at {self._where} {problem}: NETWORK_POLICY_ENFORCING_MODE=strict starts "
            f"no pod before its policy is in force, so {namespace}/{name} was not set up",
            "check the aws-eks-nodeagent container of aws-node (its log, and --enable-network-policy); "
            "the runtime retries the pod",
        )


def _details(exc: grpc.RpcError) -> str:
    details = exc.details() if hasattr(exc, "details") else ""
    return str(details or exc).splitlines()[0]


def policy_admission(mode: str, run_dir: str | Path) -> PolicyAdmission | None:
    """The admission for NETWORK_POLICY_ENFORCING_MODE (None when network policy is not in play)."""
    if mode not in (STANDARD, STRICT):
        return None
    socket_path = Path(run_dir) / AGENT_SOCKET
    return PolicyAdmission(mode=mode, agent=GrpcPolicyAgent(socket_path), where=f"unix:{socket_path}")


def admit_or_roll_back(
    admission: PolicyAdmission | None,
    *,
    namespace: str,
    name: str,
    answer_by: float,
    roll_back: Callable[[], object],
) -> None:
    """The ADD path's hook: nothing without network policy; otherwise the admission, undoing the pod's
    wiring and address when it refuses."""
    if admission is None:
        return
    try:
        admission.admit(namespace=namespace, name=name, answer_by=answer_by)
    except CNIError:
        roll_back()
        raise
