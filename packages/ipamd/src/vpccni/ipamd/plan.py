"""The wiring plan: what every component is configured with, derived from `Settings` in one place.

`Settings` is the only reader of the environment; `WiringPlan.from_settings` turns it into the typed
configuration each component takes (awsutils' `AwsConfig`, k8sapi's `KubeEndpoint`, the host network's
`HostSettings`, the pool's targets, policy and timers, the servers' addresses, the installer's conflist). The
daemon and the installer read the plan, never the settings fields, so a setting that changes nothing here
changes nothing at all (`test_plan.py` checks every registry entry against this).

It is pure (no I/O) and holds only what the settings decide: what the node's identity adds (region, primary
MAC, node IP, the ENIConfig's subnet) is filled in by the daemon at start. A new mode adds one section, built
by its own function next to the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from vpccni.awsutils.imds import ImdsConfig
from vpccni.awsutils.node import AwsConfig
from vpccni.awsutils.ratelimit import RateLimitConfig
from vpccni.awsutils.tags import TagSettings
from vpccni.cniplugin.version import VERSION
from vpccni.ipamd.adapters.kube import KubeTimers
from vpccni.ipamd.adapters.network import HostSettings
from vpccni.ipamd.egress.config import EgressConfig
from vpccni.ipamd.install.conflist import ConflistOptions
from vpccni.ipamd.logs import LogOptions
from vpccni.ipamd.nodeinit import InitOptions
from vpccni.ipamd.pool.growth import DEFAULT_PACING, PoolPacing
from vpccni.ipamd.pool.manager import PoolPolicy, PoolTimers
from vpccni.ipamd.settings import Settings
from vpccni.ipamd.sgp.config import SgpConfig
from vpccni.k8sapi import KubeEndpoint, KubeSettings
from vpccni.networkutils.vlan import EnforcingMode

HOUSEKEEPING_INTERVAL_S = 30.0  # VPC CIDR refresh (upstream 30 s) and pool gauges
GRPC_GRACE_S = 5.0


@dataclass(frozen=True, kw_only=True)
class KubePlan:
    endpoint: KubeEndpoint
    client: KubeSettings
    timers: KubeTimers
    # Upstream blocks at start until the API server answers when custom networking or ANNOTATE_POD_IP is on.
    wait_for_server: bool
    annotate_pod_ip: bool
    custom_networking: bool
    eniconfig_annotation: str  # ENI_CONFIG_ANNOTATION_DEF
    eniconfig_label: str  # ENI_CONFIG_LABEL_DEF


@dataclass(frozen=True, kw_only=True)
class PoolPlan:
    init: InitOptions  # warm targets and modes node init and the pool work from
    policy: PoolPolicy  # the ENIConfig's subnet and groups are added at start
    timers: PoolTimers
    subnet_discovery: bool
    leak_sweep: bool
    manage_untagged_enis: bool  # the rest of the ownership rule: aws.tags and the node's identity
    pacing: PoolPacing = DEFAULT_PACING  # no setting decides it; the fleet simulation models upstream's


@dataclass(frozen=True, kw_only=True)
class StorePlan:
    backing_store: str
    ip_cooldown_s: float
    add_wait_timeout_s: float


@dataclass(frozen=True, kw_only=True)
class ServePlan:
    ipamd_socket: Path
    grpc_tcp_address: str
    cni_socket: Path
    del_queue_dir: Path
    introspection_address: str | None  # None: DISABLE_INTROSPECTION
    metrics_address: str | None  # None: DISABLE_METRICS
    use_external_snat: bool
    exclude_snat_cidrs: tuple[IPv4Network, ...]
    network_policy_mode: str
    ipv6: bool  # replies carry the VPC's IPv6 CIDRs (VPCv6CIDRs) instead of its IPv4 ones


@dataclass(frozen=True, kw_only=True)
class InstallPlan:
    conflist: ConflistOptions
    bin_dir: Path
    conf_dir: Path
    disable_tcp_early_demux: bool
    # The init step's IPv6 sysctls (upstream's init container): IPv6 mode, or IPv6 egress of IPv4 pods.
    ipv6: bool
    v6_egress: bool


@dataclass(frozen=True, kw_only=True)
class WiringPlan:
    aws: AwsConfig
    kube: KubePlan
    host: HostSettings
    pool: PoolPlan
    store: StorePlan
    serve: ServePlan
    logging: LogOptions
    install: InstallPlan
    sgp: SgpConfig
    egress: EgressConfig
    housekeeping_s: float = HOUSEKEEPING_INTERVAL_S
    grpc_grace_s: float = GRPC_GRACE_S

    @classmethod
    def from_settings(cls, settings: Settings) -> WiringPlan:
        return cls(
            aws=aws_config(settings),
            kube=kube_plan(settings),
            host=host_settings(settings),
            pool=pool_plan(settings),
            store=StorePlan(
                backing_store=settings.backing_store,
                ip_cooldown_s=settings.ip_cooldown_period_s,
                add_wait_timeout_s=settings.add_wait_timeout_s,
            ),
            serve=serve_plan(settings),
            logging=LogOptions(level=settings.log_level, file=settings.log_file),
            install=install_plan(settings),
            sgp=sgp_config(settings),
            egress=egress_config(settings),
        )


def aws_config(s: Settings) -> AwsConfig:
    return AwsConfig(
        imds=ImdsConfig(endpoint=s.imds_endpoint.rstrip("/")),
        rate_limit=RateLimitConfig(
            mutating_qps=s.ec2_mutating_qps,
            mutating_burst=s.ec2_mutating_burst,
            read_qps=s.ec2_read_qps,
            read_burst=s.ec2_read_burst,
        ),
        ec2_endpoint_url=s.ec2_endpoint or None,
        http_timeout_s=s.http_timeout_s,
        vpc_cni_version=s.vpc_cni_version,
        tags=TagSettings(cluster_name=s.cluster_name, additional_tags=dict(s.additional_eni_tags)),
    )


def kube_endpoint(s: Settings) -> KubeEndpoint:
    return KubeEndpoint(
        cluster_endpoint=s.cluster_endpoint,
        kubeconfig=s.kubeconfig,
        service_host=s.kube_service_host,
        service_port=s.kube_service_port,
    )


def kube_plan(s: Settings) -> KubePlan:
    return KubePlan(
        endpoint=kube_endpoint(s),
        client=KubeSettings(
            node_name=s.node_name,
            pod_name=s.pod_name,
            user_agent=f"amazon-vpc-cni-k8s/{s.vpc_cni_version or VERSION}",
        ),
        timers=KubeTimers(connect_timeout_s=s.api_server_wait_s),
        # Security groups for pods too: branch-ENI pods cannot be told apart without it (upstream blocks).
        wait_for_server=s.custom_network_cfg or s.annotate_pod_ip or s.enable_pod_eni,
        annotate_pod_ip=s.annotate_pod_ip,
        custom_networking=s.custom_network_cfg,
        eniconfig_annotation=s.eni_config_annotation_def,
        eniconfig_label=s.eni_config_label_def,
    )


def host_settings(s: Settings) -> HostSettings:
    return HostSettings(
        exclude_snat_cidrs=s.exclude_snat_cidrs,
        external_snat=s.external_snat,
        randomize_snat=s.randomize_snat,
        node_port_support=s.node_port_support,
        connmark=s.connmark,
        external_service_cidrs=s.external_service_cidrs,
        mtu=s.eni_mtu,
        pod_mtu=s.pod_mtu,
        veth_prefix=s.veth_prefix,
        local_rule_after_vlan_rules=sgp_config(s).strict,
        ipv6=s.enable_ipv6,
        v6_egress=s.enable_v6_egress and not s.enable_ipv6,
    )


def sgp_config(s: Settings) -> SgpConfig:
    return SgpConfig(
        enabled=s.enable_pod_eni,
        enforcing_mode=EnforcingMode(s.pod_sg_enforcing_mode),
        annotation_wait_s=s.pod_eni_wait_s,
        ipv6=s.enable_ipv6,
    )


def egress_config(s: Settings) -> EgressConfig:
    return EgressConfig.for_cluster(
        ipv6_cluster=s.enable_ipv6,
        v4_egress=s.enable_v4_egress,
        v6_egress=s.enable_v6_egress,
        v4_log_file=s.egress_v4_plugin_log_file,
        v6_log_file=s.egress_v6_plugin_log_file,
        log_level=s.plugin_log_level,
        randomize_snat=s.randomize_snat,
        mtu=s.pod_mtu,
        data_dir=s.egress_ipam_dir,
    )


def pool_plan(s: Settings) -> PoolPlan:
    return PoolPlan(
        init=InitOptions(
            warm_eni_target=s.warm_eni_target,
            warm_ip_target=s.warm_ip_target,
            minimum_ip_target=s.minimum_ip_target,
            warm_prefix_target=s.warm_prefix_target,
            prefix_delegation=s.enable_prefix_delegation,
            custom_networking=s.custom_network_cfg,
            provisioning_enabled=s.provisioning_enabled,
            imds_only=s.enable_imds_only_mode,
            max_eni_cap=s.max_eni_cap,
            multi_nic=s.enable_multi_nic,
            ipv6=s.enable_ipv6,
        ),
        policy=PoolPolicy(
            provisioning_enabled=s.provisioning_enabled,
            manage_enis_non_schedulable=s.manage_enis_non_schedulable,
        ),
        timers=PoolTimers(
            half_interval_s=s.pool_monitor_interval_s / 2,
            reconcile_idle_s=s.reconcile_interval_s,
            decrease_interval_s=s.pool_decrease_interval_s,
            min_eni_age_s=s.min_eni_age_s,
        ),
        subnet_discovery=s.enable_subnet_discovery,
        leak_sweep=s.leaked_eni_cleanup_enabled,
        manage_untagged_enis=s.manage_untagged_eni,
    )


def serve_plan(s: Settings) -> ServePlan:
    return ServePlan(
        ipamd_socket=s.ipamd_socket,
        grpc_tcp_address=s.grpc_tcp_address,
        cni_socket=s.cni_socket,
        del_queue_dir=s.del_queue_dir,
        introspection_address=None if s.disable_introspection else s.introspection_bind_address,
        metrics_address=None if s.disable_metrics else s.metrics_bind_address,
        use_external_snat=s.external_snat,
        exclude_snat_cidrs=s.exclude_snat_cidrs,
        network_policy_mode=s.network_policy_enforcing_mode,
        ipv6=s.enable_ipv6,
    )


def install_plan(s: Settings) -> InstallPlan:
    return InstallPlan(
        conflist=ConflistOptions(
            veth_prefix=s.veth_prefix,
            pod_mtu=s.pod_mtu,
            pod_sg_enforcing_mode=s.pod_sg_enforcing_mode,
            plugin_log_file=s.plugin_log_file,
            plugin_log_level=s.plugin_log_level,
            enable_bandwidth_plugin=s.enable_bandwidth_plugin,
            disable_pod_v6=s.disable_pod_v6,
            cni_socket=str(s.cni_socket),
            del_queue_dir=str(s.del_queue_dir),
            egress=egress_config(s) if egress_config(s).enabled else None,
        ),
        bin_dir=Path(s.host_cni_bin_path),
        conf_dir=Path(s.host_cni_confdir_path),
        disable_tcp_early_demux=s.disable_tcp_early_demux,
        ipv6=s.enable_ipv6,
        v6_egress=s.enable_v6_egress,
    )
