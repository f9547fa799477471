"""Upstream's metric table (``cmd/cni-metrics-helper/metrics/cni_metrics.go``): which ``awscni_*`` metric of
every aws-node becomes which CloudWatch metric, and how the nodes' values combine (summed, or the largest for
the API latency). These names are a contract: dashboards and alarms built for upstream read them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reduce(enum.Enum):
    SUM = "sum"
    MAX = "max"


@dataclass(frozen=True, kw_only=True)
class Conversion:
    metric: str  # the awscni_* family every aws-node exports
    cloudwatch: str  # the CloudWatch metric name (namespace Kubernetes, dimension CLUSTER_ID)
    reduce: Reduce = Reduce.SUM


# fmt: off
METRIC_TABLE: tuple[Conversion, ...] = (
    Conversion(metric="awscni_assigned_ip_addresses", cloudwatch="assignIPAddresses"),
    Conversion(metric="awscni_total_ip_addresses", cloudwatch="totalIPAddresses"),
    Conversion(metric="awscni_total_ipv4_prefixes", cloudwatch="totalIPv4Prefixes"),
    Conversion(metric="awscni_assigned_ip_per_cidr", cloudwatch="totalAssignedIPv4sPerCidr"),
    Conversion(metric="awscni_eni_allocated", cloudwatch="eniAllocated"),
    Conversion(metric="awscni_eni_max", cloudwatch="eniMaxAvailable"),
    Conversion(metric="awscni_ip_max", cloudwatch="maxIPAddresses"),
    Conversion(metric="awscni_aws_api_latency_ms", cloudwatch="awsAPILatency", reduce=Reduce.MAX),
    Conversion(metric="awscni_aws_api_error_count", cloudwatch="awsAPIErr"),
    Conversion(metric="awscni_aws_utils_error_count", cloudwatch="awsUtilErr"),
    Conversion(metric="awscni_ipamd_error_count", cloudwatch="ipamdErr"),
    Conversion(metric="awscni_force_removed_enis", cloudwatch="forceRemoveENI"),
    Conversion(metric="awscni_force_removed_ips", cloudwatch="forceRemoveIPs"),
    Conversion(metric="awscni_ipamd_action_inprogress", cloudwatch="ipamdActionInProgress"),
    Conversion(metric="awscni_reconcile_count", cloudwatch="reconcileCount"),
    Conversion(metric="awscni_add_ip_req_count", cloudwatch="addReqCount"),
    Conversion(metric="awscni_del_ip_req_count", cloudwatch="delReqCount"),
    Conversion(metric="awscni_pod_eni_error_count", cloudwatch="podENIErr"),
    Conversion(metric="awscni_ec2api_req_count", cloudwatch="ec2ApiReqCount"),
    Conversion(metric="awscni_ec2api_error_count", cloudwatch="ec2ApiErrCount"),
)
# fmt: on

# What upstream's helper re-exports on :61681 with USE_PROMETHEUS (its
# ``GetSupportedPrometheusCNIMetricsMapping``): the cluster sums of these gauges, under the same names.
PROMETHEUS_GAUGES: tuple[str, ...] = (
    "awscni_eni_max",
    "awscni_ip_max",
    "awscni_eni_allocated",
    "awscni_total_ip_addresses",
    "awscni_assigned_ip_addresses",
    "awscni_total_ipv4_prefixes",
)
