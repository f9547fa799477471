"""The helper's environment variables (upstream's names; ours carry ``VPCCNI_``), declared once: parsing here,
the documentation (``docs/configuration.md``) generated from ``HELPER_SETTINGS``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vpccni.ipamd.settings_parsers import parse_host_port, parse_log_level
from vpccni.ipamd.settings_registry import BY_NAME
from vpccni.k8sapi.config import KubeEndpoint


class HelperSettingsError(ValueError):
    """An environment variable has a value the helper cannot use; the message names it and what to set."""


@dataclass(frozen=True, kw_only=True)
class HelperVariable:
    name: str
    default: str
    meaning: str


HELPER_SETTINGS: tuple[HelperVariable, ...] = (
    HelperVariable(
        name="USE_CLOUDWATCH",
        default="true",
        meaning="publish to CloudWatch (namespace `Kubernetes`, dimension `CLUSTER_ID`; needs "
        "`cloudwatch:PutMetricData`)",
    ),
    HelperVariable(
        name="USE_PROMETHEUS",
        default="false",
        meaning="serve the cluster sums of upstream's six pool gauges on `:61681/metrics`",
    ),
    HelperVariable(
        name="METRIC_UPDATE_INTERVAL",
        default="30",
        meaning="seconds between scrapes of every aws-node; CloudWatch gets them every 2 intervals",
    ),
    HelperVariable(
        name="AWS_CLUSTER_ID",
        default="",
        meaning="the `CLUSTER_ID` dimension; empty: the instance's `eks:cluster-name`, `CLUSTER_ID` or "
        "`Name` tag, else `k8s-cluster`",
    ),
    HelperVariable(
        name="AWS_REGION",
        default="",
        meaning="CloudWatch's region; empty: from IMDS (set it under IRSA or when IMDS is blocked)",
    ),
    HelperVariable(
        name="AWS_VPC_K8S_CNI_LOGLEVEL", default="INFO", meaning="log level (DEBUG, INFO, WARN, ERROR)"
    ),
    HelperVariable(
        name="VPCCNI_METRICS_HELPER_BIND_ADDRESS",
        default=":61681",
        meaning="where `USE_PROMETHEUS` serves `/metrics` (`host:port`; empty host: all interfaces)",
    ),
)
DEFAULTS = {v.name: v.default for v in HELPER_SETTINGS}
# Read as ipamd reads them (its registry's parsers and defaults): where IMDS, EC2 and the API server are.
SHARED_WITH_IPAMD = (
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_ENDPOINT",
    "HTTP_TIMEOUT",
    "CLUSTER_ENDPOINT",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
)


@dataclass(frozen=True, kw_only=True)
class HelperSettings:
    use_cloudwatch: bool
    use_prometheus: bool
    interval_s: int
    cluster_id: str
    region: str
    log_level: str
    bind_address: str
    imds_endpoint: str = "http://169.254.169.254"
    ec2_endpoint: str = ""
    http_timeout_s: int = 10
    kube: KubeEndpoint = field(default_factory=KubeEndpoint)

    @property
    def publish_interval_s(self) -> int:
        return 2 * self.interval_s


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, DEFAULTS[name]).strip().lower()
    if raw in ("true", "yes", "1", "t"):
        return True
    if raw in ("false", "no", "0", "f"):
        return False
    raise HelperSettingsError(f"{name}={raw!r} is not a boolean: use true or false")


def _parsed(env: Mapping[str, str], name: str, parse: Callable[[str], str]) -> str:
    raw = env.get(name, DEFAULTS[name])
    try:
        return parse(raw)
    except ValueError as exc:
        raise HelperSettingsError(f"{name}={raw!r}: {exc}") from exc


def _shared(env: Mapping[str, str], name: str) -> object:
    spec = BY_NAME[name]
    raw = env.get(name, "")
    if not raw.strip():
        return spec.default
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise HelperSettingsError(f"{name}={raw!r}: {exc}; valid: {spec.valid}") from exc


def load(env: Mapping[str, str]) -> HelperSettings:
    raw_interval = env.get("METRIC_UPDATE_INTERVAL", DEFAULTS["METRIC_UPDATE_INTERVAL"]).strip()
    try:
        interval = int(raw_interval)
    except ValueError:
        interval = 0
    if interval < 1:
        raise HelperSettingsError(
            f"METRIC_UPDATE_INTERVAL={raw_interval!r} must be a whole number of seconds, at least 1 "
            "(default 30)"
        )
    bind = _parsed(env, "VPCCNI_METRICS_HELPER_BIND_ADDRESS", parse_host_port)
    level = _parsed(env, "AWS_VPC_K8S_CNI_LOGLEVEL", parse_log_level)
    settings = HelperSettings(
        use_cloudwatch=_flag(env, "USE_CLOUDWATCH"),
        use_prometheus=_flag(env, "USE_PROMETHEUS"),
        interval_s=interval,
        cluster_id=env.get("AWS_CLUSTER_ID", "").strip(),
        region=env.get("AWS_REGION", "").strip(),
        log_level=level,
        bind_address=bind,
        imds_endpoint=str(_shared(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT")).rstrip("/"),
        ec2_endpoint=str(_shared(env, "AWS_EC2_ENDPOINT")),
        http_timeout_s=int(str(_shared(env, "HTTP_TIMEOUT"))),
        kube=KubeEndpoint(
            cluster_endpoint=str(_shared(env, "CLUSTER_ENDPOINT")),
            kubeconfig=str(_shared(env, "KUBECONFIG")),
            service_host=str(_shared(env, "KUBERNETES_SERVICE_HOST")),
            service_port=int(str(_shared(env, "KUBERNETES_SERVICE_PORT"))),
        ),
    )
    if not settings.use_cloudwatch and not settings.use_prometheus:
        raise HelperSettingsError(
            "USE_CLOUDWATCH and USE_PROMETHEUS are both false: the helper would publish nothing; enable one"
        )
    return settings
