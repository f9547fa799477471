"""The `aws-k8s-agent` daemon: builds every component, runs node init, then serves; stops them in reverse.

Order (docs/design/upstream-contract.md §1): IMDS identity and EC2 client → the API server (optional, bounded
wait) → node init (limits, host network, ENIs, tags, checkpoint restore, pre-scale) → pool manager,
reconciler, leak sweep, introspection, metrics → the CNI endpoint (drains the DEL queue before it accepts) →
the gRPC server. Sockets exist only after node init, so a SERVING health probe means ipamd is initialised.

SIGTERM/SIGINT: from then on ipamd changes no EC2 state; the servers stop gracefully, the checkpoint is
flushed and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import replace
from types import FrameType
from typing import Protocol

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.errors import AwsUtilsError
from vpccni.awsutils.limits import max_pods as eni_max_pods
from vpccni.awsutils.node import AwsNode
from vpccni.awsutils.trunking import trunking_compatible
from vpccni.cniplugin.version import VERSION
from vpccni.ipamd.adapters import malloc
from vpccni.ipamd.adapters.kube import EniConfigError, KubeLink
from vpccni.ipamd.adapters.network import RestoredPodRules
from vpccni.ipamd.adapters.node import NodeAdapters
from vpccni.ipamd.adapters.observed import ObservedCloud, ObservedReconciler
from vpccni.ipamd.adapters.platform import Platform
from vpccni.ipamd.allocator import AllocationListener, Allocator
from vpccni.ipamd.cardallocator import CardAllocators
from vpccni.ipamd.cards import DEFAULT_CARD, candidate_cards, checkpoint_path
from vpccni.ipamd.cardstack import CardStack, NodeCards
from vpccni.ipamd.checkpoint.file import Checkpointer, FileCheckpointer
from vpccni.ipamd.checkpoint.shared import SharedCheckpoint
from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
from vpccni.ipamd.cni.netpolicy import policy_admission
from vpccni.ipamd.cni.observed import ObservedCniService
from vpccni.ipamd.cni.server import CniEndpoint, EndpointSettings
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.egress.service import egress_plugins
from vpccni.ipamd.grpc.assemble import grpc_server as assembled_grpc_server
from vpccni.ipamd.grpc.server import GrpcServer
from vpccni.ipamd.introspection import (
    IPAMD_ENV,
    NETWORKUTILS_ENV,
    IntrospectionServer,
    IntrospectionSources,
    datastore_pod_views,
)
from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.ipamd.nodeinit import (
    NodeIdentity,
    NodeInit,
    NodeInitError,
    NodeInitPorts,
    NodeInitResult,
)
from vpccni.ipamd.ownership import EniOwnership
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.podips import PodIpAnnotator
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.cooldown import ReconcileCooldown
from vpccni.ipamd.pool.manager import PoolManager
from vpccni.ipamd.ports import EniDescription, NodeNetworkPort
from vpccni.ipamd.reconcile import Reconciler
from vpccni.ipamd.settings import Settings
from vpccni.ipamd.sgp.cni import BranchCni
from vpccni.ipamd.sgp.node import SgpNode
from vpccni.ipamd.sgp.trunk import TrunkTracker

log = logging.getLogger(__name__)

DEFAULT_MAX_PODS = 110  # upstream's last resort when neither the node nor eni-max-pods.txt knows


class StartupError(Exception):
    """ipamd cannot start; the message says what to do. Exit code 1, and the container restarts."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # awscni_ipamd_startup_duration_seconds{failure_reason}


class Service(Protocol):
    def stop(self) -> None: ...


class Daemon:
    """Owns and starts/stops every component. Constructing it does no I/O; `start()` does node init."""

    def __init__(
        self,
        *,
        settings: Settings,
        plan: WiringPlan | None = None,
        platform: Platform | None = None,
        clock: Clock | None = None,
        started_at: float | None = None,
    ) -> None:
        self._settings = settings  # only for introspection's env views; everything else reads the plan
        self._plan = plan or WiringPlan.from_settings(settings)
        self._platform = platform or Platform()
        # Every timer of ipamd (pool loop, cooldowns, back-off, retries) reads this clock; socket deadlines
        # of the CNI endpoint and the API server's connection probe are real time (I/O waits on them).
        self._clock: Clock = clock or SystemClock()
        self._started_at = self._clock.monotonic() if started_at is None else started_at
        self.metrics = IpamdMetrics(version=VERSION)
        self._stopping = threading.Event()
        self._services: list[Service] = []  # started ones, stopped in reverse
        self.pool: PoolManager | None = None  # card 0's (every card's: `cards`)
        self.datastore: DataStore | None = None
        self.allocator: CardAllocators | None = None
        self.cards: NodeCards | None = None
        self.grpc: GrpcServer | None = None
        self.init_result: NodeInitResult | None = None
        self._kube: KubeLink | None = None
        self._adapters: NodeAdapters | None = None
        self._trunk: TrunkTracker | None = None  # ENABLE_POD_ENI: the ENI port that spots the trunk
        self._branch_checkpoint: Checkpointer | None = None
        self.sgp: SgpNode | None = None
        self.eniconfig_name = ""  # custom networking: the node's ENIConfig (introspection /v1/eni-configs)

    # --- process ----------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Returns the exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                self.start()
            except StartupError as err:
                log.error("%s", err)
                self.stop()
                return 1
            except Exception:
                log.exception("ipamd failed to start")
                self.stop()
                return 1
            while not self._clock.wait(self._stopping, 1.0):
                pass
            self.stop()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: no more EC2 changes, shutting down", signal.Signals(signum).name)
        self.terminate()

    def terminate(self) -> None:
        """Stop changing EC2 state now (upstream's terminating flag) and let `run()` shut down."""
        self._terminate_pools()
        self._stopping.set()

    def _terminate_pools(self) -> None:
        for stack in self.cards or ():
            if stack.pool is not None:
                stack.pool.terminate()

    # --- start ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Node init, the pool's background work, then every server (the `aws-k8s-agent` process)."""
        with_api_server = False
        try:
            aws = self._connect_aws()
            kube = self._connect_kube()
            with_api_server = kube is not None and kube.connected
            self._init_node(aws, kube)
            self._start_pool_work(aws)
            self._serve(aws)
        except StartupError as err:
            self._observe_startup(False, with_api_server, err.reason)
            raise
        self._observe_startup(True, with_api_server, "")
        log.info("ipamd %s ready in %.2f s", VERSION, self._clock.monotonic() - self._started_at)
        malloc.trim()  # node init's transient buffers (EC2 and API server replies, netlink dumps)

    def start_headless(self) -> None:
        """Node init and the pool's background work (pool loop, reconciler, leak sweep), the allocator ready,
        and no server: a caller assigns through `allocator`. The fleet simulation runs hundreds of these."""
        aws = self._connect_aws()
        self._init_node(aws, self._connect_kube())
        self._start_pool_work(aws)

    def _observe_startup(self, success: bool, with_api_server: bool, reason: str) -> None:
        self.metrics.startup_duration.labels(
            success=str(success).lower(), with_api_server=str(with_api_server).lower(), failure_reason=reason
        ).observe(self._clock.monotonic() - self._started_at)

    def _connect_aws(self) -> AwsNode:
        try:
            return self._platform.connect_aws(config=self._plan.aws, observer=self.metrics, clock=self._clock)
        except AwsUtilsError as err:
            raise StartupError(
                f"cannot read this instance's identity from IMDS: {err}. Check that IMDS is reachable "
                "(AWS_EC2_METADATA_SERVICE_ENDPOINT, hop limit 2 for IMDSv2 from a container)",
                reason="imds",
            ) from err

    def _connect_kube(self) -> KubeLink | None:
        kube = self._plan.kube
        try:
            api = self._platform.kube_api(kube)
        except (FileNotFoundError, ValueError) as err:
            if kube.wait_for_server:
                raise StartupError(
                    f"{err}: custom networking, ANNOTATE_POD_IP and ENABLE_POD_ENI need the Kubernetes API"
                    " server",
                    reason="apiserver",
                ) from err
            log.info("no Kubernetes API server configured (%s); running without it", err)
            return None
        if api is None:
            return None
        link = KubeLink(api=api, timers=kube.timers, clock=self._clock)
        # Custom networking (the node's ENIConfig) and pod annotations need the server: wait (upstream).
        link.connect(required=kube.wait_for_server)
        self._kube = link
        self._services.append(link)
        return link

    def _init_node(self, aws: AwsNode, kube: KubeLink | None) -> None:
        plan, ident = self._plan, aws.identity
        options = plan.pool.init
        nodes = NodeAdapters.build(aws=aws, plan=plan, platform=self._platform, clock=self._clock)
        self._adapters = nodes
        cloud = nodes.cloud
        network: NodeNetworkPort = nodes.network
        if plan.sgp.enabled:
            network = self._trunk = TrunkTracker(
                nodes.network, netlink=nodes.netlink, on_change=self.metrics.trunk_eni_attached.set
            )
        prefix_mode = options.prefix_delegation and self._supports_pd(aws)
        # Card 0's file holds the branch-ENI pods too, which the datastore never sees.
        shared = SharedCheckpoint(FileCheckpointer(plan.store.backing_store))
        self._branch_checkpoint = shared.branches
        cooldown = ReconcileCooldown(clock=self._clock)
        card_numbers = candidate_cards(self._instance_cards(aws), multi_nic=options.multi_nic)
        ownership = EniOwnership(
            instance_id=ident.instance_id,
            primary_eni_id=ident.primary_eni_id,
            manage_untagged=plan.pool.manage_untagged_enis,
            tags=plan.aws.tags,
            network_cards=frozenset(card_numbers),
            primary_only=options.ipv6,
        )

        def prepare(eni: EniDescription) -> None:
            if options.provisioning_enabled:
                ownership.tag(cloud, eni)

        def stack(card: int) -> CardStack:
            checkpointer: Checkpointer = (
                shared.datastore
                if card == DEFAULT_CARD
                else FileCheckpointer(checkpoint_path(plan.store.backing_store, card))
            )
            datastore = DataStore(
                checkpointer=checkpointer,
                prefix_delegation=prefix_mode,
                cooldown_s=plan.store.ip_cooldown_s,
                clock=self._clock,
                network_card=card,
                ipv6=options.ipv6,
            )
            reconciler = Reconciler(
                store=datastore,
                cloud=cloud,
                metadata=nodes.metadata,
                network=network,
                cooldown=cooldown,
                primary_eni_id=ident.primary_eni_id,
                network_card=card,
                is_managed=ownership.manages,
                prepare_eni=prepare,
                ipv6=options.ipv6,
            )
            return CardStack(card=card, datastore=datastore, checkpointer=checkpointer, reconciler=reconciler)

        cards = NodeCards(stack(card) for card in card_numbers)
        self.cards = cards
        datastore = cards.first.datastore
        self.datastore = datastore
        schedulable = kube.schedulable if kube is not None else (lambda: True)
        eni_subnet, eni_groups = self._eniconfig(kube)
        observed_cloud = ObservedCloud(
            cloud,
            self.metrics,
            on_denied=lambda err: kube.report_missing_permission(str(err)) if kube else None,
        )

        def make_pool(config: PoolConfig) -> PoolManager:
            card = cards[config.network_card]
            if card.pool is None:
                card.pool = PoolManager(
                    config=config,
                    store=card.datastore,
                    cloud=observed_cloud,
                    network=network,
                    cooldown=cooldown,
                    clock=self._clock,
                    reconciler=ObservedReconciler(card.reconciler, self.metrics),
                    schedulable=schedulable,
                    policy=replace(plan.pool.policy, subnet_id=eni_subnet, security_group_ids=eni_groups),
                    timers=plan.pool.timers,
                    # Upstream reconciles every iteration while security groups for pods waits for a trunk.
                    reconcile_eagerly=self._waiting_for_trunk,
                    pacing=plan.pool.pacing,
                    account_throttled_at=aws.last_throttle,
                )
            return card.pool

        restores = cards.restores(nodes.netlink)
        node_init = NodeInit(
            options=options,
            ownership=ownership,
            identity=NodeIdentity(
                instance_id=ident.instance_id,
                instance_type=ident.instance_type,
                primary_mac=ident.primary_mac,
                max_pods=self._max_pods(aws, kube),
                reserve_trunk_slot=plan.sgp.enabled and trunking_compatible(ident.instance_type),
            ),
            ports=NodeInitPorts(
                limits=aws.limits_catalog,
                metadata=nodes.metadata,
                cloud=cloud,
                host=nodes.host,
                network=network,
                store=datastore,
                restore=restores[0],
                pod_rules=RestoredPodRules(
                    wiring=nodes.wiring,
                    host_rules=NetlinkHostPodRules(nodes.netlink),
                    assigned=cards.assigned,
                    pool_cidrs=cards.pool_cidrs,
                    veth_prefix=plan.host.veth_prefix,
                    mtu=plan.host.pod_mtu,
                ),
                cooldown=cooldown,
                card_stores={s.card: s.datastore for s in cards if s.card != 0},
                card_restores={card: r for card, r in restores.items() if card != 0},
                unattached_own_enis=lambda: aws.leak_sweeper().run_own().deleted,
            ),
            grow_pool=make_pool,
            clock=self._clock,
        )
        started = self._clock.monotonic()
        try:
            with self.metrics.action("nodeInit"):
                result = node_init.run()
        except NodeInitError as err:
            self.metrics.node_init_duration.labels(success="false").observe(self._clock.monotonic() - started)
            raise StartupError(str(err), reason=err.step) from err
        self.metrics.node_init_duration.labels(success="true").observe(self._clock.monotonic() - started)
        self.init_result = result
        configs = (result.config, *result.card_configs)
        cards.keep(c.network_card for c in configs)
        self.pool = make_pool(result.config)
        for config in result.card_configs:
            make_pool(config)
        self.metrics.set_limits(
            max_enis=sum(c.max_enis for c in configs),
            max_ips=sum(c.max_ips_per_eni * c.max_enis for c in configs),
        )
        log.info(
            "node init done: %d managed ENIs on network cards %s, %d restored pods, pool %s",
            len(result.managed_eni_ids),
            ", ".join(str(c.network_card) for c in configs),
            result.restored_allocations,
            self.pool.status.message,
        )

    def _waiting_for_trunk(self) -> bool:
        return self._trunk is not None and self._trunk.trunk is None

    def _eniconfig(self, kube: KubeLink | None) -> tuple[str | None, tuple[str, ...]]:
        """Custom networking: the subnet and security groups of new ENIs, from the node's ENIConfig (read
        once at start)."""
        kube_plan = self._plan.kube
        if not kube_plan.custom_networking:
            return None, ()
        if kube is None:
            raise StartupError(
                "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true needs the Kubernetes API server to read the node's"
                " ENIConfig: set CLUSTER_ENDPOINT (or run in the cluster) and MY_NODE_NAME",
                reason="eniconfig",
            )
        try:
            config = kube.eniconfig(
                annotation_key=kube_plan.eniconfig_annotation, label_key=kube_plan.eniconfig_label
            )
        except EniConfigError as err:
            raise StartupError(str(err), reason="eniconfig") from err
        self.eniconfig_name = config.name
        kube.announce_custom_networking(config.name)
        log.info("custom networking: ENIConfig %s, subnet %s", config.name, config.subnet)
        return config.subnet, config.security_groups

    def _instance_cards(self, aws: AwsNode) -> tuple[int, ...]:
        """The instance type's network cards (for ENABLE_MULTI_NIC); node init reports unknown types."""
        try:
            return tuple(aws.instance_limits().network_cards)
        except AwsUtilsError:
            return ()

    def _supports_pd(self, aws: AwsNode) -> bool:
        try:
            return aws.instance_limits().supports_prefix_delegation
        except AwsUtilsError:
            return False  # node init's limits step fails with the actionable message

    def _max_pods(self, aws: AwsNode, kube: KubeLink | None) -> int:
        """Node capacity from the API server, else eni-max-pods (the same formula), else 110."""
        from_node = kube.max_pods() if kube is not None else None
        if from_node:
            return from_node
        try:
            return eni_max_pods(aws.instance_limits(), custom_networking=self._plan.kube.custom_networking)
        except AwsUtilsError:
            return DEFAULT_MAX_PODS

    # --- serve ------------------------------------------------------------------------------------------

    def _start_pool_work(self, aws: AwsNode) -> None:
        plan, cards = self._plan, self.cards
        assert cards is not None
        listeners = self._allocation_listeners()
        for card in cards:
            assert card.pool is not None
            card.allocator = Allocator(
                datastore=card.datastore,
                pool=card.pool,
                metrics=self.metrics,
                default_timeout_s=plan.store.add_wait_timeout_s,
                clock=self._clock,
                # A pod's annotation is its first address (upstream's), card 0's.
                listeners=listeners if card.card == 0 else (),
            )
        allocator = CardAllocators({c.card: c.allocator for c in cards if c.allocator}, clock=self._clock)
        self.allocator = allocator
        for card in cards:
            assert card.pool is not None
            card.pool.start()
            self._services.append(card.pool)
        if plan.pool.leak_sweep:
            sweeper = aws.leak_sweeper()
            sweeper.start()
            self._services.append(sweeper)
        allocator.mark_ready()

    def _serve(self, aws: AwsNode) -> None:
        plan, cards, allocator = self._plan, self.cards, self.allocator
        assert cards is not None and allocator is not None
        branches = self._start_sgp(cards)
        self._start_http(cards)
        self._start_housekeeping(cards)
        self._start_cni_endpoint(allocator, branches, aws)
        sgp_rpc = self.sgp.rpc if self.sgp is not None else None
        grpc_server = assembled_grpc_server(plan, aws.identity, allocator, sgp_rpc)
        try:
            grpc_server.start()
        except OSError as err:
            raise StartupError(str(err), reason="grpc") from err
        self.grpc = grpc_server

    def _start_sgp(self, cards: NodeCards) -> BranchCni | None:
        """ENABLE_POD_ENI: branch-ENI pods restored (or cleaned up), and the trunk asked for (on card 0)."""
        kube, nodes, result = self._kube, self._adapters, self.init_result
        if self._trunk is None or self._branch_checkpoint is None or nodes is None or result is None:
            return None
        self.sgp = SgpNode.build(
            config=self._plan.sgp,
            tracker=self._trunk,
            checkpointer=self._branch_checkpoint,
            netlink=nodes.netlink,
            pods=nodes.wiring,
            api=lambda: kube.api if kube is not None and kube.connected else None,
            on_error=lambda fn: self.metrics.pod_eni_error_count.labels(fn=fn).inc(),
            on_count=self.metrics.branch_eni_pods.set,
        )
        self.sgp.restore()
        eni_count = lambda: len(cards.first.datastore.snapshot().enis)  # noqa: E731
        interval = 2 * self._plan.pool.timers.half_interval_s
        self._services.append(
            self.sgp.ask_for_trunk(
                eni_count=eni_count, max_enis=result.config.max_enis, clock=self._clock, interval_s=interval
            )
        )
        return self.sgp.cni

    def _allocation_listeners(self) -> tuple[AllocationListener, ...]:
        if not self._plan.kube.annotate_pod_ip or self._kube is None:
            return ()
        annotator = PodIpAnnotator(api=self._kube.api)
        annotator.start()
        self._services.append(annotator)
        return (annotator,)

    def _start_http(self, cards: NodeCards) -> None:
        s, serve = self._settings, self._plan.serve
        if serve.introspection_address is not None:
            server = IntrospectionServer(
                sources=IntrospectionSources(
                    eni_infos=cards.eni_infos,
                    eni_config_name=lambda: self.eniconfig_name,
                    networkutils_env=lambda: s.env_view(NETWORKUTILS_ENV),
                    ipamd_env=lambda: s.env_view(IPAMD_ENV),
                    pool_status=lambda: cards.pool_views(targets=self._plan.pool.init),
                    pods=lambda: (
                        datastore_pod_views(cards.assigned())
                        + ([a.view() for a in self.sgp.attachments.all()] if self.sgp is not None else [])
                    ),
                ),
                bind_address=serve.introspection_address,
            )
            server.start()
            self._services.append(server)
        if serve.metrics_address is not None:
            cards.update_gauges(self.metrics)
            self.metrics.start(serve.metrics_address)
            self._services.append(self.metrics)

    def _start_housekeeping(self, cards: NodeCards) -> None:
        """Pool gauges, the VPC CIDR refresh (upstream re-reads the CIDRs every 30 s), and free malloc pages
        handed back to the kernel (what pool changes and bursts of pods left behind)."""
        host = None if self._adapters is None else self._adapters.host

        every_s = self._plan.housekeeping_s

        def loop() -> None:
            while not self._clock.wait(self._stopping, every_s):
                try:
                    cards.update_gauges(self.metrics)
                    if host is not None and host.refresh():
                        log.info("VPC CIDRs changed: SNAT and connmark rules re-applied")
                    malloc.trim()
                except AwsUtilsError as err:
                    # IMDS down or refusing: expected, and the message says what to check; the rules in
                    # force stay as they are.
                    log.warning("re-reading the VPC CIDRs failed (retrying in %.0f s): %s", every_s, err)
                except Exception:
                    log.exception("housekeeping failed; retrying in %.0f s", every_s)

        threading.Thread(target=loop, name="housekeeping", daemon=True).start()

    def _start_cni_endpoint(
        self, allocator: CardAllocators, branches: BranchCni | None, aws: AwsNode
    ) -> None:
        """The endpoint of the aws-cni shim; it drains the DEL queue before accepting connections."""
        serve = self._plan.serve
        nodes = self._adapters
        assert nodes is not None
        endpoint = CniEndpoint(
            service=ObservedCniService(
                metrics=self.metrics,
                allocator=allocator,
                network=nodes.wiring,
                host_rules=NetlinkHostPodRules(nodes.netlink),
                policy=policy_admission(serve.network_policy_mode, serve.ipamd_socket.parent),
                multi_nic=allocator if self._plan.pool.init.multi_nic else None,
                branches=branches,
                chained=egress_plugins(self._plan.egress, nodes.wiring, aws.identity),
            ),
            settings=EndpointSettings(
                socket_path=str(serve.cni_socket), del_queue_dir=str(serve.del_queue_dir)
            ),
            on_add_queued=self.pool.queued_adds if self.pool is not None else lambda delta: None,
        )
        try:
            endpoint.start()
        except (OSError, RuntimeError) as err:
            raise StartupError(f"cannot start the CNI endpoint: {err}", reason="cni-endpoint") from err
        self._services.append(endpoint)

    # --- stop -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Graceful: no more EC2 changes, gRPC drains, services stop in reverse, checkpoint flushed."""
        self._stopping.set()
        self._terminate_pools()
        if self.grpc is not None:
            self.grpc.stop(self._plan.grpc_grace_s)
            self.grpc = None
        while self._services:
            service = self._services.pop()
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)
        if self.cards is not None and self.init_result is not None:
            for card in self.cards:
                try:
                    card.datastore.persist()
                except OSError as err:
                    log.error("flushing the checkpoint of network card %d failed: %s", card.card, err)
        log.info("ipamd stopped")
