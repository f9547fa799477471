"""The one typed, validated, frozen settings object, parsed from the environment by `load_settings`.

Names, parsers, defaults and meanings live in `settings_registry.REGISTRY`; this module only turns them into a
`Settings` value and checks combinations. Every problem is collected so an operator fixes them all at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from ipaddress import IPv4Network
from pathlib import Path

from vpccni.ipamd.settings_registry import REGISTRY, SettingSpec, Support

_log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """The environment holds invalid values; `errors` lists every one, each naming the variable."""

    def __init__(self, errors: tuple[str, ...]) -> None:
        self.errors = errors
        super().__init__("invalid aws-node configuration:\n  " + "\n  ".join(errors))


@dataclass(frozen=True, kw_only=True)
class Settings:
    # warm pool
    warm_eni_target: int
    warm_ip_target: int
    minimum_ip_target: int
    warm_prefix_target: int
    enable_prefix_delegation: bool
    max_eni: int
    ip_cooldown_period_s: int
    manage_enis_non_schedulable: bool
    disable_network_resource_provisioning: bool
    enable_imds_only_mode: bool
    disable_leaked_eni_cleanup: bool
    manage_untagged_eni: bool
    enable_subnet_discovery: bool
    # security groups for pods
    enable_pod_eni: bool
    pod_eni_wait_s: float
    # custom networking
    custom_network_cfg: bool
    eni_config_annotation_def: str
    eni_config_label_def: str
    # SNAT and host network
    external_snat: bool
    randomize_snat: str
    exclude_snat_cidrs: tuple[IPv4Network, ...]
    external_service_cidrs: tuple[IPv4Network, ...]
    connmark: int
    node_port_support: bool
    eni_mtu: int
    pod_mtu: int
    veth_prefix: str
    # logging, introspection, metrics
    log_level: str
    log_file: str
    plugin_log_file: str
    plugin_log_level: str
    egress_v4_plugin_log_file: str
    egress_v6_plugin_log_file: str
    introspection_bind_address: str
    disable_introspection: bool
    disable_metrics: bool
    metrics_bind_address: str
    # the client-side EC2 rate limit
    ec2_mutating_qps: float
    ec2_mutating_burst: int
    ec2_read_qps: float
    ec2_read_burst: int
    # AWS and Kubernetes
    cluster_name: str
    additional_eni_tags: tuple[tuple[str, str], ...]
    ec2_endpoint: str
    http_timeout_s: int
    imds_endpoint: str
    vpc_cni_version: str
    cluster_endpoint: str
    kubeconfig: str
    kube_service_host: str
    kube_service_port: int
    annotate_pod_ip: bool
    node_name: str
    pod_name: str
    backing_store: str
    enable_ipv4: bool
    enable_multi_nic: bool
    enable_ipv6: bool
    enable_v4_egress: bool
    enable_v6_egress: bool
    egress_ipam_dir: str
    # conflist and init container (read by the installer)
    enable_bandwidth_plugin: bool
    pod_sg_enforcing_mode: str
    disable_tcp_early_demux: bool
    disable_pod_v6: bool
    network_policy_enforcing_mode: str
    host_cni_bin_path: str
    host_cni_confdir_path: str
    # vpccni's own
    run_dir: str
    add_wait_timeout_s: float
    grpc_tcp_address: str
    pool_monitor_interval_s: float
    pool_decrease_interval_s: float
    reconcile_interval_s: float
    min_eni_age_s: float
    api_server_wait_s: float

    # --- derived values (upstream rules, in one place) ---

    @property
    def warm_ip_targets_defined(self) -> bool:
        """Upstream: WARM_IP_TARGET or MINIMUM_IP_TARGET set overrides the ENI and prefix targets."""
        return self.warm_ip_target > 0 or self.minimum_ip_target > 0

    @property
    def provisioning_enabled(self) -> bool:
        return not (self.disable_network_resource_provisioning or self.enable_imds_only_mode)

    @property
    def leaked_eni_cleanup_enabled(self) -> bool:
        return self.provisioning_enabled and not self.disable_leaked_eni_cleanup

    @property
    def max_eni_cap(self) -> int | None:
        """MAX_ENI when it caps anything (≥ 1), else None."""
        return self.max_eni if self.max_eni >= 1 else None

    @property
    def eni_tags(self) -> dict[str, str]:
        return dict(self.additional_eni_tags)

    @property
    def ipamd_socket(self) -> Path:
        return Path(self.run_dir) / "ipamd.sock"

    @property
    def cni_socket(self) -> Path:
        return Path(self.run_dir) / "cni.sock"

    @property
    def del_queue_dir(self) -> Path:
        return Path(self.run_dir) / "del-queue"

    def env_view(self, names: tuple[str, ...]) -> dict[str, str]:
        """Selected variables as upstream's introspection prints them (string values)."""
        by_name = {spec.name: spec for spec in REGISTRY}
        out: dict[str, str] = {}
        for name in names:
            spec = by_name[name]
            out[name] = _render(getattr(self, spec.attr) if spec.attr else spec.default)
        return out


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):  # tag pairs
            return ",".join(f"{k}={v}" for k, v in value)
        return ",".join(str(v) for v in value)
    return str(value)


def _raw(environ: Mapping[str, str], spec: SettingSpec) -> str | None:
    """Empty counts as unset, as Go's os.Getenv("") does upstream."""
    raw = environ.get(spec.name)
    if raw is None or raw.strip() == "":
        return None
    return raw


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Parse and validate; raises `SettingsError` listing every invalid variable and combination."""
    settings, errors = read_settings(environ)
    if errors:
        raise SettingsError(errors)
    return settings


def read_settings(environ: Mapping[str, str]) -> tuple[Settings, tuple[str, ...]]:
    """`load_settings` for tools that must work on a node whose settings are broken (the `vpccni` CLI): an
    invalid value reads as its default, and every problem comes back beside the settings."""
    errors: list[str] = []
    values: dict[str, object] = {}
    for spec in REGISTRY:
        raw = _raw(environ, spec)
        value = spec.default
        if raw is not None:
            try:
                value = spec.parse(raw)
            except ValueError as exc:
                errors.append(f"{spec.name}={raw!r}: {exc}; valid: {spec.valid}")
                value = spec.default
        if spec.support is Support.UNSUPPORTED and value != spec.default:
            errors.append(
                f"{spec.name}={_render(value)}: {spec.feature} is not supported by this version; unset it"
            )
        elif spec.support is Support.NO_OP and raw is not None:
            _log.warning("%s is deprecated and has no effect; it can be removed", spec.name)
        if spec.attr is not None:
            values[spec.attr] = value
    if values.get("pod_mtu") is None:
        values["pod_mtu"] = values.get("eni_mtu", 9001)
    errors.extend(_combination_errors(values))
    return Settings(**values), tuple(errors)  # type: ignore[arg-type]


IPV6_MIN_MTU = 1280  # RFC 8200: every IPv6 link carries at least this much


def _combination_errors(values: Mapping[str, object]) -> list[str]:
    errors = _address_family_errors(values)
    if values.get("enable_prefix_delegation") is True and all(
        values.get(k) == 0 for k in ("warm_prefix_target", "warm_ip_target", "minimum_ip_target")
    ):
        errors.append(
            "ENABLE_PREFIX_DELEGATION=true with WARM_PREFIX_TARGET=0: setting WARM_PREFIX_TARGET = 0 is not "
            "supported while WARM_IP_TARGET/MINIMUM_IP_TARGET is not set; set WARM_PREFIX_TARGET (e.g. 1), "
            "WARM_IP_TARGET or MINIMUM_IP_TARGET"
        )
    return errors


def _address_family_errors(values: Mapping[str, object]) -> list[str]:
    """Upstream's rules for IPv4/IPv6 mode (isConfigValid and the entrypoint), every one with its fix."""
    ipv4, ipv6 = values.get("enable_ipv4") is True, values.get("enable_ipv6") is True
    if ipv4 == ipv6:
        pair = "ENABLE_IPv6=true and ENABLE_IPv4=true" if ipv4 else "ENABLE_IPv4=false and ENABLE_IPv6=false"
        return [
            f"{pair}: exactly one of them must be true (dual-stack pods are not offered, as upstream); set"
            " ENABLE_IPv4=true for IPv4 mode, or ENABLE_IPv6=true with ENABLE_IPv4=false for IPv6 mode"
        ]
    if not ipv6:
        return []
    errors = []
    if values.get("enable_prefix_delegation") is not True:
        errors.append(
            "ENABLE_IPv6=true needs ENABLE_PREFIX_DELEGATION=true: IPv6 pods get addresses from a /80 prefix"
            " of the primary ENI (set it, and WARM_PREFIX_TARGET=1 as the manifests do)"
        )
    if values.get("custom_network_cfg") is True:
        errors.append(
            "ENABLE_IPv6=true with AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true: custom networking is not offered"
            " in IPv6 mode (upstream neither); IPv6 pods use the primary ENI's subnet: unset it"
        )
    if values.get("enable_v6_egress") is True:
        errors.append(
            "ENABLE_V6_EGRESS=true with ENABLE_IPv6=true: IPv6 egress is for the pods of IPv4 clusters (IPv6"
            " pods have IPv6 already; their IPv4 egress is ENABLE_V4_EGRESS): unset ENABLE_V6_EGRESS"
        )
    if values.get("enable_multi_nic") is True:
        errors.append(
            "ENABLE_MULTI_NIC=true with ENABLE_IPv6=true: network cards above 0 are managed in IPv4 mode only"
            " in this release (IPv6 pods get one /128 from the primary ENI's /80): unset ENABLE_MULTI_NIC,"
            " or run the node in IPv4 mode"
        )
    eni_mtu, pod_mtu = values.get("eni_mtu"), values.get("pod_mtu")
    for name, mtu in (("AWS_VPC_ENI_MTU", eni_mtu), ("POD_MTU", pod_mtu if pod_mtu != eni_mtu else None)):
        if isinstance(mtu, int) and mtu < IPV6_MIN_MTU:
            errors.append(f"{name}={mtu} with ENABLE_IPv6=true: IPv6 needs an MTU of at least {IPV6_MIN_MTU}")
    return errors


def settings_fields() -> frozenset[str]:
    return frozenset(f.name for f in fields(Settings))
