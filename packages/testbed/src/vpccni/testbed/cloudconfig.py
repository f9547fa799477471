"""`CloudConfig`: what the testbed's cloud is made of (region, VPC and subnets, throttling, latency, faults,
IMDS behaviour), as a value the CLI's --config file can give too."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vpccni.testbed.ec2.addresses import Placement
from vpccni.testbed.ec2.throttle import EC2_DEFAULT_BUCKETS, BucketSpec
from vpccni.testbed.imds.server import Outage

CNI_ROLE_TAG = "kubernetes.io/role/cni"
DEFAULT_VPC_CIDR = ipaddress.IPv4Network("10.0.0.0/16")
# Documentation space (RFC 3849), never a real network: a dual-stack VPC's /56 unless another is given.
DEFAULT_VPC_IPV6_CIDR = ipaddress.IPv6Network("2001:db8:0:100::/56")


@dataclass(frozen=True, kw_only=True)
class SubnetSpec:
    cidr: ipaddress.IPv4Network
    tags: Mapping[str, str] = field(default_factory=dict)
    ipv6_cidr: ipaddress.IPv6Network | None = None  # in a dual-stack VPC: default its n-th /64


@dataclass(frozen=True, kw_only=True)
class CloudConfig:
    region: str = "us-west-2"
    availability_zone: str | None = None  # default: <region>a
    vpc_cidr: ipaddress.IPv4Network = DEFAULT_VPC_CIDR
    vpc_ipv6_cidr: ipaddress.IPv6Network | None = None  # a /56 makes the VPC dual-stack
    # The first subnet is the node's primary subnet; the second is tagged for subnet discovery.
    subnets: tuple[SubnetSpec, ...] = (
        SubnetSpec(cidr=ipaddress.IPv4Network("10.0.0.0/20")),
        SubnetSpec(cidr=ipaddress.IPv4Network("10.0.16.0/20"), tags={CNI_ROLE_TAG: "1"}),
    )
    host: str = "127.0.0.1"
    ec2_port: int = 0
    throttle: Mapping[str, BucketSpec] = field(default_factory=lambda: dict(EC2_DEFAULT_BUCKETS))
    # EC2's published per-action buckets (`AccountThrottle`) instead of `throttle`'s shared category buckets.
    account_limits: bool = False
    latency: Mapping[str, float] = field(default_factory=dict)  # per EC2 action ("*" = all), seconds
    errors: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # action -> (EC2 error code, count)
    address_placement: Placement = Placement.LOWEST
    seed: int = 0
    imds_lag: float = 0.0
    imds_outage_mode: Outage = Outage.REFUSE  # what set_imds_outage(True) does

    @property
    def zone(self) -> str:
        return self.availability_zone or f"{self.region}a"

    def subnet_ipv6_cidrs(self) -> list[ipaddress.IPv6Network | None]:
        """Each subnet's IPv6 /64: the given one, else the n-th /64 of the VPC's /56 (none in an IPv4 VPC)."""
        if self.vpc_ipv6_cidr is None:
            return [None for _ in self.subnets]
        blocks = self.vpc_ipv6_cidr.subnets(new_prefix=64)
        return [spec.ipv6_cidr or next(blocks) for spec in self.subnets]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CloudConfig:
        """Build from a JSON-style mapping (the CLI's --config file); unknown keys are an error."""
        kwargs: dict[str, Any] = dict(raw)
        unknown = set(kwargs) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown testbed config keys {sorted(unknown)}: see vpccni.testbed.cloudconfig.CloudConfig"
            )
        if "vpc_cidr" in kwargs:
            kwargs["vpc_cidr"] = ipaddress.IPv4Network(kwargs["vpc_cidr"])
        if kwargs.get("vpc_ipv6_cidr"):
            kwargs["vpc_ipv6_cidr"] = ipaddress.IPv6Network(kwargs["vpc_ipv6_cidr"])
        if "subnets" in kwargs:
            kwargs["subnets"] = tuple(
                SubnetSpec(
                    cidr=ipaddress.IPv4Network(s["cidr"]),
                    tags=dict(s.get("tags", {})),
                    ipv6_cidr=ipaddress.IPv6Network(s["ipv6_cidr"]) if s.get("ipv6_cidr") else None,
                )
                for s in kwargs["subnets"]
            )
        if "throttle" in kwargs:
            kwargs["throttle"] = {
                cat: BucketSpec(capacity=int(b["capacity"]), refill_per_s=float(b["refill_per_s"]))
                for cat, b in (kwargs["throttle"] or {}).items()
            }
        if "errors" in kwargs:
            kwargs["errors"] = {
                action: (str(code), int(count)) for action, (code, count) in kwargs["errors"].items()
            }
        if "address_placement" in kwargs:
            kwargs["address_placement"] = Placement(kwargs["address_placement"])
        if "imds_outage_mode" in kwargs:
            kwargs["imds_outage_mode"] = Outage(kwargs["imds_outage_mode"])
        return cls(**kwargs)
