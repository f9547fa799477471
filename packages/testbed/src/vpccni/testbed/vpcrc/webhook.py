"""The VPC resource controller's pod mutating webhook: a pod some SecurityGroupPolicy selects gets the
extended resource `vpc.amazonaws.com/pod-eni` in its first container's requests and limits, so the scheduler
counts branch ENIs per node and ipamd (which reads the limit) knows the pod needs one.

Registered as a `KubeApiServer.admission` hook: it runs on every pod POSTed to the API server, reading the
policies and service accounts from the server's store as the real webhook reads its informer caches.
"""

from __future__ import annotations

import logging
from typing import Any

from vpccni.k8sapi.names import POD_ENI_RESOURCE
from vpccni.testbed.kube.resources import PODS, SECURITYGROUPPOLICIES, SERVICEACCOUNTS, ResourceType
from vpccni.testbed.kube.store import NotFoundError, ObjectStore
from vpccni.testbed.vpcrc.policy import groups_for

log = logging.getLogger(__name__)


class PodEniWebhook:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def __call__(self, resource: ResourceType, pod: dict[str, Any], namespace: str | None) -> None:
        if resource.key != PODS.key:
            return
        spec = pod.get("spec") or {}
        containers = spec.get("containers") or []
        if spec.get("hostNetwork") or not containers:
            return  # host-network pods use the node's interfaces: no branch ENI (as upstream's webhook)
        ns = namespace or (pod.get("metadata") or {}).get("namespace") or "default"
        if not self.groups(pod, ns):
            return
        resources = containers[0].setdefault("resources", {})
        for part in ("requests", "limits"):
            resources.setdefault(part, {})[POD_ENI_RESOURCE] = "1"
        log.info("pod %s/%s: %s requested", ns, (pod.get("metadata") or {}).get("name"), POD_ENI_RESOURCE)

    def groups(self, pod: dict[str, Any], namespace: str) -> tuple[str, ...]:
        policies, _ = self._store.list(SECURITYGROUPPOLICIES, namespace)
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        try:
            sa_labels = (self._store.get(SERVICEACCOUNTS, account, namespace).get("metadata") or {}).get(
                "labels"
            )
        except NotFoundError:
            sa_labels = None
        pod_labels = (pod.get("metadata") or {}).get("labels") or {}
        return groups_for(policies, pod_labels=pod_labels, sa_labels=sa_labels or {})
