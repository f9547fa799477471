"""One simulated node: the product's node init, pool manager, reconciler, leak sweep, allocator and datastore
with its real IMDS and EC2 clients, and no datapath.

What is left out is what does not touch EC2: the host network (iptables, rules), ENI links and routes, pod
wiring, the CNI and gRPC servers, metrics. Those ports are no-ops here (`NoDatapath`); everything that
decides or makes an EC2 call is the product's code, configured from the same settings as `aws-k8s-agent`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from vpccni.awsutils.clock import SystemClock
from vpccni.awsutils.imds import InstanceMetadata
from vpccni.awsutils.inventory import wait_for_eni_in_imds
from vpccni.awsutils.leak import LeakSweeper
from vpccni.awsutils.limits import max_pods as eni_max_pods
from vpccni.awsutils.node import AwsNode
from vpccni.ipamd.adapters.aws import (
    Ec2CloudPort,
    ImdsMetadataPort,
    SubnetCidrs,
    cloud_errors,
    subnet_cidr_lookup,
)
from vpccni.ipamd.allocator import Allocation, Allocator
from vpccni.ipamd.checkpoint import FileCheckpointer
from vpccni.ipamd.daemon import timers_from
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.nodeinit import NodeIdentity, NodeInit, NodeInitPorts, is_managed_eni, tag_managed_eni
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.cooldown import ReconcileCooldown
from vpccni.ipamd.pool.manager import PoolManager, PoolPolicy
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.pool.status import PoolStatus
from vpccni.ipamd.ports import CloudPort, EniAddresses, EniDescription, EniRequest
from vpccni.ipamd.reconcile import Reconciler
from vpccni.ipamd.settings import load_settings
from vpccni.testbed.fleet.pacing import PacingModel

log = logging.getLogger(__name__)


class NoDatapath:
    """The host-side ports of a node without a datapath: nothing to program, nothing restored."""

    def setup_host_network(self) -> None:
        pass

    def setup_eni(self, eni: EniAddresses) -> None:
        pass

    def teardown_eni(self, *, eni_id: str, device_number: int, primary_ip: IPv4Address | None) -> None:
        pass

    def restore_allocations(self) -> int:
        return 0  # a fresh node: no checkpoint

    def configure_pod_rules(self) -> None:
        pass


class _PoolWithoutWakeups:
    """The pool as the allocator sees it when pods must not wake it (upstream's 5 s tick only)."""

    def __init__(self, pool: PoolManager) -> None:
        self._pool = pool

    @property
    def status(self) -> PoolStatus:
        return self._pool.status

    def wake(self) -> None:
        pass

    def wake_if_low(self, snapshot: PoolSnapshot) -> bool:
        return False

    def waiting(self) -> AbstractContextManager[None]:
        return nullcontext()


class _ImdsWaitingCloud:
    """Upstream's allocation: after the attach, poll IMDS until it lists the ENI with an address."""

    def __init__(self, cloud: Ec2CloudPort, metadata: InstanceMetadata) -> None:
        self._cloud = cloud
        self._metadata = metadata

    def allocate_eni(self, request: EniRequest) -> EniDescription:
        eni = self._cloud.allocate_eni(request)
        with cloud_errors("waiting for the new ENI in IMDS"):
            wait_for_eni_in_imds(self._metadata, eni_id=eni.eni_id, mac=eni.mac, clock=SystemClock())
        return eni

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cloud, name)


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    instance_id: str
    imds_endpoint: str
    state_dir: Path


class FleetAgent:
    """`start()` runs node init and starts the pool loop and the leak sweep; `assign()` is a pod's ADD."""

    def __init__(self, *, node: NodeSpec, env: Mapping[str, str], pacing: PacingModel) -> None:
        self.node = node
        self._env = {
            **env,
            **pacing.env,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": node.imds_endpoint,
            "AWS_VPC_K8S_CNI_BACKING_STORE": str(node.state_dir / "ipam.json"),
        }
        self._pacing = pacing
        self._pool: PoolManager | None = None
        self._sweeper: LeakSweeper | None = None
        self.allocator: Allocator | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        s = load_settings(self._env)
        clock = SystemClock()
        aws = AwsNode.connect(env=self._env, clock=clock)
        ident = aws.identity
        self.node.state_dir.mkdir(parents=True, exist_ok=True)
        subnets = SubnetCidrs(subnet_cidr_lookup(aws.ec2))
        metadata = ImdsMetadataPort(aws.metadata, subnets=subnets)
        ec2_port = Ec2CloudPort(
            enis=aws.enis,
            subnets=subnets,
            candidate_subnets=lambda: aws.candidate_subnets(discovery=s.enable_subnet_discovery),
            security_groups=lambda: ident.security_groups,
        )
        cloud: CloudPort = (
            _ImdsWaitingCloud(ec2_port, aws.metadata) if self._pacing.imds_wait_after_attach else ec2_port
        )
        host = NoDatapath()
        limits = aws.instance_limits()
        prefix_mode = s.enable_prefix_delegation and limits.supports_prefix_delegation
        datastore = DataStore(
            checkpointer=FileCheckpointer(s.backing_store),
            prefix_delegation=prefix_mode,
            cooldown_s=s.ip_cooldown_period_s,
        )
        cooldown = ReconcileCooldown(clock=time.monotonic)

        def prepare(eni: EniDescription) -> None:
            tag_managed_eni(cloud, eni, instance_id=ident.instance_id, extra_tags=s.eni_tags)

        reconciler = Reconciler(
            store=datastore,
            cloud=cloud,
            metadata=metadata,
            network=host,
            cooldown=cooldown,
            primary_eni_id=ident.primary_eni_id,
            is_managed=lambda eni: is_managed_eni(
                eni, instance_id=ident.instance_id, manage_untagged=s.manage_untagged_eni
            ),
            prepare_eni=prepare,
        )

        def make_pool(config: PoolConfig) -> PoolManager:
            if self._pool is None:
                self._pool = PoolManager(
                    config=config,
                    store=datastore,
                    cloud=cloud,
                    network=host,
                    cooldown=cooldown,
                    clock=time.monotonic,
                    reconciler=reconciler,
                    policy=PoolPolicy(provisioning_enabled=s.provisioning_enabled),
                    timers=timers_from(s).pool,
                    pacing=self._pacing.pool,
                )
            return self._pool

        result = NodeInit(
            settings=s,
            identity=NodeIdentity(
                instance_id=ident.instance_id,
                instance_type=ident.instance_type,
                primary_mac=ident.primary_mac,
                max_pods=eni_max_pods(limits, custom_networking=s.custom_network_cfg),
            ),
            ports=NodeInitPorts(
                limits=aws.limits_catalog,
                metadata=metadata,
                cloud=cloud,
                host=host,
                network=host,
                store=datastore,
                restore=host,
                pod_rules=host,
                cooldown=cooldown,
            ),
            grow_pool=make_pool,
        ).run()
        pool = make_pool(result.config)
        signals = pool if self._pacing.pool_wakeups else _PoolWithoutWakeups(pool)
        self.allocator = Allocator(datastore=datastore, pool=signals, default_timeout_s=s.add_wait_timeout_s)
        pool.start()
        if s.leaked_eni_cleanup_enabled:
            self._sweeper = aws.leak_sweeper()
            if self._pacing.leak_first_delay_max_s is not None:
                self._sweeper.first_delay_max_s = self._pacing.leak_first_delay_max_s
            self._sweeper.start()
        self.allocator.mark_ready()

    def assign(self, pod: str, *, timeout_s: float | None) -> Allocation:
        """The allocation part of a pod's CNI ADD (wiring needs no EC2 call)."""
        assert self.allocator is not None, "start() first"
        return self.allocator.assign(
            network="aws-cni",
            container_id=f"{pod}-sandbox",
            ifname="eth0",
            pod_namespace="fleet",
            pod_name=pod,
            timeout_s=timeout_s,
        )

    def stop(self) -> None:
        """Stop the loops without giving anything back to EC2 (the fleet is torn down with the testbed)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.stop(timeout_s=2.0)
        if self._sweeper is not None:
            self._sweeper.stop(timeout=2.0)
