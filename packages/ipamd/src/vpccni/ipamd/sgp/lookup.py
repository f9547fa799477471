"""Which pods are branch-ENI pods, and their branch ENI: read from the pods ipamd watches (no API call on
the ADD path), waiting a bounded time for what is not there yet.

A pod is a branch-ENI pod when a container limits the extended resource `vpc.amazonaws.com/pod-eni` (the
VPC resource controller's webhook adds it to the pods a SecurityGroupPolicy selects). The controller writes
the `vpc.amazonaws.com/pod-eni` annotation once the branch ENI is associated with the trunk, which can come
after kubelet asks for the pod's network: ADD then waits (upstream fails at once and kubelet retries).

A pod missing from the watched list is waited for too: taking it for an ordinary pod would give a pod the
policy selects the node's security groups instead of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vpccni.ipamd.sgp.annotation import BranchEni, PodEniAnnotationError, parse_pod_eni
from vpccni.k8sapi import PodCache, PodInfo
from vpccni.k8sapi.names import POD_ENI_ANNOTATION, POD_ENI_RESOURCE


class BranchLookupError(Exception):
    """No answer for the pod; `retryable` when waiting longer (kubelet's retry) may give one."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class BranchPodLookup:
    """`branch_eni(ns, name, wait_s=...)`: None for an ordinary pod, else its branch ENI."""

    def __init__(
        self,
        *,
        pods: Callable[[], PodCache | None],
        ipv6: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pods = pods  # None while ipamd has no connection to the API server yet
        self._ipv6 = ipv6  # ENABLE_IPv6: the pod gets the branch ENI's IPv6 address
        self._monotonic = monotonic

    def branch_eni(self, namespace: str, name: str, *, wait_s: float) -> BranchEni | None:
        if not name:
            return None  # a runtime outside Kubernetes: no pod object, no policy can select it
        deadline = self._monotonic() + max(0.0, wait_s)
        cache = self._pods()
        if cache is None or not cache.synced:
            raise BranchLookupError(
                "ENABLE_POD_ENI is on and ipamd has not listed this node's pods from the API server yet, so "
                f"it cannot tell whether pod {namespace}/{name} needs a branch ENI; check the node's "
                "connection to the API server (CLUSTER_ENDPOINT, aws-node's RBAC for pods)",
                retryable=True,
            )
        pod = self._wait(cache, namespace, name, deadline, lambda p: p is not None)
        if pod is None:
            raise BranchLookupError(
                f"pod {namespace}/{name} is not among the pods the API server lists on this node after "
                f"{wait_s:.0f}s: with ENABLE_POD_ENI ipamd must see its spec to know whether it asked for "
                f"{POD_ENI_RESOURCE}; check the node's connection to the API server",
                retryable=True,
            )
        if not pod.requests_pod_eni:
            return None
        pod = self._wait(cache, namespace, name, deadline, _annotated)
        if pod is None or POD_ENI_ANNOTATION not in pod.annotations:
            raise BranchLookupError(
                f"pod {namespace}/{name} asked for {POD_ENI_RESOURCE} but has no {POD_ENI_ANNOTATION} "
                f"annotation after {wait_s:.0f}s: the VPC resource controller has not given it a branch ENI "
                "yet. Check that the controller runs (on EKS: the cluster's control plane), that this node's "
                "CNINode lists SecurityGroupsForPods and a trunk ENI is attached, and the node's "
                f"{POD_ENI_RESOURCE} capacity (kubectl describe node)",
                retryable=True,
            )
        try:
            return parse_pod_eni(pod.annotations[POD_ENI_ANNOTATION], ipv6=self._ipv6)
        except PodEniAnnotationError as exc:
            raise BranchLookupError(
                f"pod {namespace}/{name}: {exc}; the VPC resource controller writes it, check its version",
                retryable=False,
            ) from None

    def _wait(
        self,
        cache: PodCache,
        namespace: str,
        name: str,
        deadline: float,
        ready: Callable[[PodInfo | None], bool],
    ) -> PodInfo | None:
        pod = cache.get(namespace, name)
        if ready(pod):
            return pod
        left = deadline - self._monotonic()
        if left > 0:
            cache.wait_for(lambda c: ready(c.get(namespace, name)), timeout=left)
        pod = cache.get(namespace, name)
        return pod if ready(pod) else None


def _annotated(pod: PodInfo | None) -> bool:
    return pod is not None and POD_ENI_ANNOTATION in pod.annotations
