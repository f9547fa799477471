"""One simulated node: the product's own daemon (`Daemon.start_headless`: node init, pool loop, reconciler,
leak sweep, allocator, datastore and checkpoint) with its real IMDS and EC2 clients, and no datapath.

The host side runs on networkutils' stateful fakes (netlink, iptables, nft, pod namespaces), so the daemon's
host-network and ENI setup code runs unchanged and costs a process nothing; when EC2 attaches an ENI its
link appears in the fake host at once, as a hot-plugged device does. No server is started: the kubelet
model calls the allocator as the CNI endpoint would, and the CNI wiring itself makes no EC2 call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.ec2api import SDK_MAX_ATTEMPTS, Boto3EC2Api, Ec2ClientConfig, make_boto3_client
from vpccni.awsutils.eni import EniManager
from vpccni.awsutils.inventory import wait_for_eni_in_imds
from vpccni.awsutils.leak import LeakSweeper
from vpccni.awsutils.models import AllocatedEni
from vpccni.awsutils.node import AwsConfig, AwsNode
from vpccni.awsutils.observer import ApiObserver
from vpccni.awsutils.ratelimit import Ec2RateLimiter
from vpccni.ipamd.adapters.platform import Platform, connect_aws
from vpccni.ipamd.allocator import Allocation
from vpccni.ipamd.daemon import Daemon
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import load_settings
from vpccni.networkutils.testing import FakeIptables, FakeNamespace, FakeNetnsNetlink, FakeNetwork, FakeNft
from vpccni.testbed.fleet.pacing import PacingModel

log = logging.getLogger(__name__)


class _FleetEnis(EniManager):
    """EC2's ENI calls as the product makes them; a new ENI's link then shows in the node's fake host (the
    upstream model first polls IMDS for it, as upstream's WaitForENIAndIPsAttached does)."""

    host: FakeNamespace
    metadata: Any = None  # InstanceMetadata: set for the upstream model only

    def allocate_eni(
        self,
        *,
        subnet_ids: Sequence[str],
        security_groups: Sequence[str],
        ip_count: int = 0,
        prefix_count: int = 0,
        network_card: int = 0,
        connection_tracking: Mapping[str, Any] | None = None,
    ) -> AllocatedEni:
        eni = super().allocate_eni(
            subnet_ids=subnet_ids,
            security_groups=security_groups,
            ip_count=ip_count,
            prefix_count=prefix_count,
            network_card=network_card,
            connection_tracking=connection_tracking,
        )
        if self.metadata is not None:
            wait_for_eni_in_imds(self.metadata, eni_id=eni.eni_id, mac=eni.mac, clock=SystemClock())
        self.host.add_link(f"eth{eni.device_index}", mac=eni.mac, up=True)
        return eni


def sdk_retrying_ec2(config: AwsConfig, region: str, *, observer: ApiObserver, clock: Clock) -> Boto3EC2Api:
    """The EC2 client as upstream's: the SDK's standard retries (10 attempts), which the node's own code
    never sees, and no client-side limit (the config's rates are 0 for the upstream model)."""
    client = replace(config.ec2_client(region), max_attempts=1)  # the adapter's own loop: one attempt

    def factory(cfg: Ec2ClientConfig) -> Any:
        return make_boto3_client(cfg, sdk_attempts=SDK_MAX_ATTEMPTS)

    limiter = Ec2RateLimiter(config.rate_limit, clock=clock, observer=observer)
    return Boto3EC2Api(client, client_factory=factory, limiter=limiter, observer=observer, clock=clock)


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    instance_id: str
    imds_endpoint: str
    state_dir: Path


class FleetAgent:
    """`start()` runs node init and starts the pool loop and the leak sweep; `assign()` is a pod's ADD."""

    def __init__(self, *, node: NodeSpec, env: Mapping[str, str], pacing: PacingModel) -> None:
        self.node = node
        self._pacing = pacing
        settings = load_settings(
            {
                **env,
                **pacing.env,
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": node.imds_endpoint,
                "AWS_VPC_K8S_CNI_BACKING_STORE": str(node.state_dir / "ipam.json"),
                "VPCCNI_RUN_DIR": str(node.state_dir / "run"),
                "DISABLE_INTROSPECTION": "true",
                "DISABLE_METRICS": "true",
            }
        )
        plan = WiringPlan.from_settings(settings)
        plan = replace(plan, pool=replace(plan.pool, pacing=pacing.pool))
        self._network = FakeNetwork()
        _, self._host = self._network.add_namespace("host")
        platform = Platform(
            connect_aws=self._connect_aws,
            kube_api=lambda _: None,
            open_netlink=lambda: self._host,
            iptables=FakeIptables,
            nft=FakeNft,
            namespaces=lambda: FakeNetnsNetlink(self._network),
        )
        self._daemon = Daemon(settings=settings, plan=plan, platform=platform, clock=SystemClock())

    def _connect_aws(self, *, config: AwsConfig, observer: ApiObserver, clock: Clock) -> AwsNode:
        aws = connect_aws(config=config, observer=observer, clock=clock)
        if self._pacing.sdk_retries:
            aws = AwsNode(
                metadata=aws.metadata,
                identity=aws.identity,
                ec2=sdk_retrying_ec2(config, aws.identity.region, observer=observer, clock=clock),
                tag_settings=aws.tag_settings,
                clock=clock,
            )
        enis = _FleetEnis(
            aws.ec2, instance_id=aws.identity.instance_id, tag_settings=aws.tag_settings, clock=clock
        )
        enis.host = self._host
        if self._pacing.imds_wait_after_attach:
            enis.metadata = aws.metadata
        aws.enis = enis
        self._host.add_link("eth0", mac=aws.identity.primary_mac, up=True)
        first_delay = self._pacing.leak_first_delay_max_s
        if first_delay is not None:
            make_sweeper = aws.leak_sweeper

            def sweeper() -> LeakSweeper:
                swept = make_sweeper()
                swept.first_delay_max_s = first_delay
                return swept

            aws.leak_sweeper = sweeper  # type: ignore[method-assign]
        return aws

    def start(self) -> None:
        self.node.state_dir.mkdir(parents=True, exist_ok=True)
        self._daemon.start_headless()

    def assign(self, pod: str, *, timeout_s: float | None) -> Allocation:
        """The allocation part of a pod's CNI ADD, as the CNI endpoint calls it."""
        allocator = self._daemon.allocator
        assert allocator is not None, "start() first"
        return allocator.assign(
            network="aws-cni",
            container_id=f"{pod}-sandbox",
            ifname="eth0",
            pod_namespace="fleet",
            pod_name=pod,
            timeout_s=timeout_s,
        )

    def stop(self) -> None:
        """Stop the loops without giving anything back to EC2 (the fleet is torn down with the testbed)."""
        self._daemon.stop()
