"""A stand-in for EKS's VPC resource controller (aws/amazon-vpc-resource-controller-k8s), the control-plane
half of security groups for pods, so the testbed runs the feature end to end:

- `webhook`: the pod mutating webhook: a pod a SecurityGroupPolicy selects asks for the extended resource
  `vpc.amazonaws.com/pod-eni`;
- `controller`: for every node whose CNINode lists SecurityGroupsForPods it creates and attaches a trunk ENI
  and advertises the node's branch capacity; for every such pod on it, a branch ENI with the policy's groups,
  associated with the trunk under a free VLAN id, and the pod's `vpc.amazonaws.com/pod-eni` annotation; a
  deleted pod's branch ENI is deleted after a cool-down.

It speaks to the API server with the official `kubernetes` client and to EC2 with boto3, as the real one
does (to the testbed's endpoints). `policy` matches policies to pods.
"""

from vpccni.testbed.vpcrc.controller import ControllerConfig, VpcResourceController
from vpccni.testbed.vpcrc.webhook import PodEniWebhook

__all__ = ["ControllerConfig", "PodEniWebhook", "VpcResourceController"]
