"""Wiring for one node: read the instance's identity from IMDS and build the EC2-side objects from it.

``AwsNode.connect(config=AwsConfig(...))`` reads the identity from IMDS (the one call that does I/O) and
builds the EC2 side from it. This is what ipamd calls at start (upstream's ``awsutils.New``, configured from
ipamd's settings), and what another project uses to get the whole AWS layer in three lines.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass, field

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.ec2api import (
    DEFAULT_HTTP_TIMEOUT_S,
    Boto3EC2Api,
    EC2Api,
    Ec2ClientConfig,
    Ec2InstanceTypeSource,
)
from vpccni.awsutils.eni import EniManager
from vpccni.awsutils.imds import ImdsConfig, ImdsHttpClient, InstanceMetadata, MetadataSource
from vpccni.awsutils.leak import LeakSweeper
from vpccni.awsutils.limits import InstanceLimits, LimitsCatalog
from vpccni.awsutils.observer import ApiObserver, NullObserver
from vpccni.awsutils.ratelimit import Ec2RateLimiter, RateLimitConfig
from vpccni.awsutils.subnets import discover_subnets
from vpccni.awsutils.tags import TagSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AwsConfig:
    """How the AWS layer is configured (no environment is read here: ipamd derives this from its settings)."""

    imds: ImdsConfig = field(default_factory=ImdsConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    ec2_endpoint_url: str | None = None  # None: the region's public endpoint
    http_timeout_s: int = DEFAULT_HTTP_TIMEOUT_S
    vpc_cni_version: str = ""  # added to the User-Agent
    tags: TagSettings = field(default_factory=TagSettings)

    def ec2_client(self, region: str) -> Ec2ClientConfig:
        return Ec2ClientConfig(
            region=region,
            endpoint_url=self.ec2_endpoint_url,
            http_timeout_s=self.http_timeout_s,
            vpc_cni_version=self.vpc_cni_version,
        )


@dataclass(frozen=True, kw_only=True)
class NodeIdentity:
    """What IMDS says about this instance and its primary ENI."""

    instance_id: str
    instance_type: str
    region: str
    availability_zone: str
    primary_mac: str
    primary_eni_id: str
    primary_ipv4: ipaddress.IPv4Address
    primary_ipv6: ipaddress.IPv6Address | None  # IMDS `ipv6`: the primary ENI's first IPv6 address, if any
    subnet_id: str
    subnet_cidr: ipaddress.IPv4Network | None
    vpc_id: str
    vpc_ipv4_cidrs: tuple[ipaddress.IPv4Network, ...]
    security_groups: tuple[str, ...]
    vpc_ipv6_cidrs: tuple[ipaddress.IPv6Network, ...] = ()


def read_identity(metadata: InstanceMetadata) -> NodeIdentity:
    mac = metadata.primary_mac()
    return NodeIdentity(
        instance_id=metadata.instance_id(),
        instance_type=metadata.instance_type(),
        region=metadata.region(),
        availability_zone=metadata.availability_zone(),
        primary_mac=mac,
        primary_eni_id=metadata.interface_id(mac),
        primary_ipv4=metadata.local_ipv4(),
        primary_ipv6=metadata.ipv6(),
        subnet_id=metadata.subnet_id(mac),
        subnet_cidr=metadata.subnet_ipv4_cidr(mac),
        vpc_id=metadata.vpc_id(mac),
        vpc_ipv4_cidrs=tuple(metadata.vpc_ipv4_cidrs(mac)),
        security_groups=tuple(metadata.security_group_ids(mac)),
        vpc_ipv6_cidrs=tuple(metadata.vpc_ipv6_cidrs(mac)),
    )


class AwsNode:
    """The AWS layer for one node: IMDS, EC2, ENI lifecycle, limits, subnet discovery and the leak sweep."""

    def __init__(
        self,
        *,
        metadata: InstanceMetadata,
        identity: NodeIdentity,
        ec2: EC2Api,
        tag_settings: TagSettings,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        limiter: Ec2RateLimiter | None = None,
    ) -> None:
        self.metadata = metadata
        self.identity = identity
        self.ec2 = ec2
        self.limiter = limiter  # the EC2 client's, when it has one
        self.tag_settings = tag_settings
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.enis = EniManager(
            ec2, instance_id=identity.instance_id, tag_settings=tag_settings, clock=self._clock, rng=self._rng
        )
        self.limits_catalog = LimitsCatalog(Ec2InstanceTypeSource(ec2))

    @classmethod
    def connect(
        cls,
        *,
        config: AwsConfig,
        observer: ApiObserver | None = None,
        metadata_source: MetadataSource | None = None,
        clock: Clock | None = None,
    ) -> AwsNode:
        """Read the identity from IMDS (I/O) and build the EC2 client for this node's region."""
        observer = observer or NullObserver()
        clock = clock or SystemClock()
        source = metadata_source or ImdsHttpClient(config.imds, observer=observer, clock=clock)
        metadata = InstanceMetadata(source)
        identity = read_identity(metadata)
        limiter = Ec2RateLimiter(config.rate_limit, clock=clock, observer=observer)
        ec2 = Boto3EC2Api(config.ec2_client(identity.region), limiter=limiter, observer=observer, clock=clock)
        log.info(
            "node %s (%s) in %s, VPC %s, primary ENI %s",
            identity.instance_id,
            identity.instance_type,
            identity.availability_zone,
            identity.vpc_id,
            identity.primary_eni_id,
        )
        return cls(
            metadata=metadata,
            identity=identity,
            ec2=ec2,
            tag_settings=config.tags,
            clock=clock,
            limiter=limiter,
        )

    def last_throttle(self) -> float:
        """When EC2 last throttled this node's calls (monotonic; -inf: never, or no limiter to hear it)."""
        return self.limiter.last_throttle if self.limiter is not None else float("-inf")

    def instance_limits(self) -> InstanceLimits:
        return self.limits_catalog.get(self.identity.instance_type)

    def candidate_subnets(self, *, discovery: bool = True) -> list[str]:
        """Where a new ENI may go: discovered subnets (most free IPs first) or just the primary subnet."""
        if not discovery:
            return [self.identity.subnet_id]
        return discover_subnets(
            self.ec2,
            vpc_id=self.identity.vpc_id,
            availability_zone=self.identity.availability_zone,
            primary_subnet_id=self.identity.subnet_id,
            cluster_name=self.tag_settings.cluster_name,
        )

    def leak_sweeper(self) -> LeakSweeper:
        return LeakSweeper(
            self.ec2,
            self.enis,
            vpc_id=self.identity.vpc_id,
            cluster_name=self.tag_settings.cluster_name,
            clock=self._clock,
            rng=self._rng,
        )
