"""Upstream's `rpc.NPBackend`, the CNI's calls to the agent (on `<run dir>/npa.sock`, health service
`grpc.health.v1.np-agent`):

- `EnforceNpToPod` (ADD): answers `Success=true` once the pod's rules are in the kernel; with network policy
  off it answers success at once, as upstream's agent does; a timeout answers `Success=false`.
- `DeletePodNp` (DEL): forgets the pod's admission; its entries go with the next table write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.np-agent"
STRICT = "strict"


class Enforcer(Protocol):
    def enforce(self, namespace: str, name: str, *, strict: bool | None = None) -> bool: ...

    def forget(self, namespace: str, name: str) -> None: ...


class NpBackendServicer(rpc_pb2_grpc.NPBackendServicer):  # type: ignore[misc]
    def __init__(
        self, enforcer: Enforcer | None, *, count: Callable[[str], None] = lambda result: None
    ) -> None:
        self._enforcer = enforcer  # None: network policy is off
        self._count = count

    def EnforceNpToPod(self, request: Any, context: grpc.ServicerContext) -> Any:
        pod = f"{request.K8S_POD_NAMESPACE}/{request.K8S_POD_NAME}"
        if not request.K8S_POD_NAME or not request.K8S_POD_NAMESPACE:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "EnforceNpToPod needs K8S_POD_NAME and K8S_POD_NAMESPACE"
            )
        if self._enforcer is None:
            self._count("disabled")
            return rpc_pb2.EnforceNpReply(Success=True)
        mode = request.NETWORK_POLICY_MODE.strip().lower()
        strict = True if mode == STRICT else (None if not mode else False)
        ok = self._enforcer.enforce(request.K8S_POD_NAMESPACE, request.K8S_POD_NAME, strict=strict)
        self._count("enforced" if ok else "timeout")
        if not ok:
            log.warning("EnforceNpToPod %s: the pod's rules did not reach the kernel in time", pod)
        else:
            log.debug("EnforceNpToPod %s (%s): enforced", pod, mode or "agent's mode")
        return rpc_pb2.EnforceNpReply(Success=ok)

    def DeletePodNp(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self._enforcer is not None:
            self._enforcer.forget(request.K8S_POD_NAMESPACE, request.K8S_POD_NAME)
        return rpc_pb2.DeleteNpReply(Success=True)
