"""What kubelet does to the API server when an EC2 instance joins: register its Node."""

from __future__ import annotations

from vpccni.awsutils.limits import max_pods, static_limits
from vpccni.testbed.cloud import InstanceInfo
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
