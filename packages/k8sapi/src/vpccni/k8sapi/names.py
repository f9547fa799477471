"""Kubernetes names that are a contract with upstream, the VPC Resource Controller and users."""

from __future__ import annotations

# ENIConfig resolution (docs/design/upstream-contract.md §6).
EXTERNAL_ENICONFIG_LABEL = "vpc.amazonaws.com/externalEniConfig"
DEFAULT_ENICONFIG_ANNOTATION = "k8s.amazonaws.com/eniConfig"  # ENI_CONFIG_ANNOTATION_DEF default
DEFAULT_ENICONFIG_LABEL = "k8s.amazonaws.com/eniConfig"  # ENI_CONFIG_LABEL_DEF default
DEFAULT_ENICONFIG_NAME = "default"

# Node and pod metadata ipamd reads or writes (docs/design/upstream-contract.md §6).
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
POD_IPS_ANNOTATION = "vpc.amazonaws.com/pod-ips"
POD_ENI_ANNOTATION = "vpc.amazonaws.com/pod-eni"
POD_ENI_RESOURCE = "vpc.amazonaws.com/pod-eni"

# Custom resources.
ENICONFIG_GROUP, ENICONFIG_VERSION, ENICONFIG_PLURAL = "crd.k8s.amazonaws.com", "v1alpha1", "eniconfigs"
CNINODE_GROUP, CNINODE_VERSION, CNINODE_PLURAL = "vpcresources.k8s.aws", "v1alpha1", "cninodes"
CNINODE_FEATURE_SGP = "SecurityGroupsForPods"
CNINODE_FEATURE_CUSTOM_NETWORKING = "CustomNetworking"

# Event reasons ipamd emits on its own aws-node pod.
REASON_MISSING_IAM_PERMISSIONS = "MissingIAMPermissions"
REASON_MISSING_ENICONFIG = "MissingENIConfig"
EVENT_COMPONENT = "aws-node"
