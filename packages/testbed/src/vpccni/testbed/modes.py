"""The aws-node settings and testbed VPC of each IPv6 setup, shared by the tests, the demo and the bench.

- an IPv6 cluster: IPv6 pods from a /80 on the primary ENI (prefix delegation, as upstream requires),
  with IPv4 egress through egress-cni (ENABLE_V4_EGRESS, on by default);
- an IPv4 cluster with ENABLE_V6_EGRESS: IPv4 pods with IPv6 egress through egress-cni.

Both need a dual-stack VPC: `dual_stack()`.
"""

from __future__ import annotations

from vpccni.testbed.cloud import DEFAULT_VPC_IPV6_CIDR, CloudConfig

IPV6_CLUSTER_ENV = {
    "ENABLE_IPv6": "true",
    "ENABLE_IPv4": "false",
    "ENABLE_PREFIX_DELEGATION": "true",
    "WARM_PREFIX_TARGET": "1",  # upstream refuses prefix delegation without a warm target
}
V6_EGRESS_ENV = {"ENABLE_V6_EGRESS": "true"}


def dual_stack(config: CloudConfig | None = None) -> CloudConfig:
    """`config` (default: the testbed's) with an IPv6 /56 on the VPC and a /64 on each subnet."""
    base = config or CloudConfig()
    if base.vpc_ipv6_cidr is not None:
        return base
    from dataclasses import replace

    return replace(base, vpc_ipv6_cidr=DEFAULT_VPC_IPV6_CIDR)
