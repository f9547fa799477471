"""What kubelet does to the API server when an EC2 instance joins: register its Node, and report the
DaemonSet pods it runs; and the pods the scheduler binds to it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from vpccni.awsutils.limits import max_pods, static_limits
from vpccni.testbed.cloud import InstanceInfo
from vpccni.testbed.kube.resources import PODS
from vpccni.testbed.kube.server import KubeApiServer

KUBELET_DEFAULT_MAX_PODS = 110  # kubelet's own default, for an instance type the limits table lacks


def register_kubelet_node(kube: KubeApiServer, instance: InstanceInfo, region: str) -> str:
    """Register the instance's Node as kubelet does on EKS and return its name: the private DNS name
    (kubelet's hostname-override), capacity.pods from the max-pods calculator."""
    name = f"ip-{str(instance.primary_ip).replace('.', '-')}.{region}.compute.internal"
    limits = static_limits(instance.instance_type)
    kube.register_node(
        name,
        instance.instance_type,
        max_pods(limits) if limits is not None else KUBELET_DEFAULT_MAX_PODS,
        provider_id=f"aws:///{instance.availability_zone}/{instance.instance_id}",
        internal_ip=str(instance.primary_ip),
    )
    return name


def register_aws_node_pod(kube: KubeApiServer, *, node_name: str, host_ip: str) -> str:
    """The aws-node DaemonSet's pod on a node, as kubelet reports it running (host network: the pod's IP is
    the node's); upstream's cni-metrics-helper finds these by ``k8s-app=aws-node``. Returns its name."""
    name = f"aws-node-{hashlib.sha1(node_name.encode()).hexdigest()[:5]}"
    kube.store.create(
        PODS,
        {
            "metadata": {
                "name": name,
                "namespace": "kube-system",
                "labels": {"k8s-app": "aws-node", "app.kubernetes.io/name": "aws-node"},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "aws-node", "uid": ""}
                ],
            },
            "spec": {
                "nodeName": node_name,
                "hostNetwork": True,
                "serviceAccountName": "aws-node",
                "containers": [{"name": "aws-node", "ports": [{"containerPort": 61678, "name": "metrics"}]}],
            },
            "status": {
                "phase": "Running",
                "hostIP": host_ip,
                "podIP": host_ip,
                "podIPs": [{"ip": host_ip}],
                "containerStatuses": [{"name": "aws-node", "ready": True, "restartCount": 0}],
            },
        },
    )
    return name


def schedule_pod(
    kube: KubeApiServer,
    *,
    node_name: str,
    namespace: str,
    name: str,
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
) -> dict[str, Any]:
    """A pod as the API server stores it once created (through admission, as a POST: webhooks apply) and
    bound to ``node_name`` by the scheduler; kubelet has not started it yet. Returns the stored object."""
    manifest: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "nodeName": node_name,
            "serviceAccountName": service_account,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}],
        },
        "status": {"phase": "Pending"},
    }
    return kube.store.create(PODS, kube.admit(PODS, manifest, namespace), namespace)
