"""What every `vpccni doctor` check shares: the node's configuration as doctor reads it, the context the
checks read the node through, and the result each returns (OK, WARN or FAIL, with a fix)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vpccni.ipamd.cli.host import Ec2DryRun, HostReader, HttpClient
from vpccni.ipamd.cli.introspect import IntrospectionSource
from vpccni.ipamd.cli.nodepaths import DEFAULT_CONFLIST_DIRS, conflist_dirs
from vpccni.ipamd.settings import read_settings

IMDS_DEFAULT = "http://169.254.169.254"


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    name: str
    status: Status
    message: str
    fix: str = ""


@dataclass(frozen=True, kw_only=True)
class DoctorConfig:
    """Where things live on this node, as ipamd's settings say (read leniently: doctor must run on a node
    whose settings are broken, and reports them)."""

    run_dir: str = "/var/run/aws-node"
    checkpoint: str = "/var/run/aws-node/ipam.json"
    conflist_dirs: tuple[str, ...] = DEFAULT_CONFLIST_DIRS
    veth_prefix: str = "eni"
    imds_endpoint: str = IMDS_DEFAULT
    api_server: str = ""
    in_container: bool = False
    region: str = ""
    settings_problems: tuple[str, ...] = ()
    pod_eni: bool = False  # ENABLE_POD_ENI: the security-groups-for-pods checks (`doctor_sgp`) apply
    pod_sg_strict: bool = True  # POD_SECURITY_GROUP_ENFORCING_MODE=strict
    disable_tcp_early_demux: bool = False
    ipv6: bool = False  # ENABLE_IPv6
    v4_egress: bool = True  # ENABLE_V4_EGRESS (IPv6 clusters)
    v6_egress: bool = False  # ENABLE_V6_EGRESS (IPv4 clusters)

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> DoctorConfig:
        s, problems = read_settings(env)
        api = s.cluster_endpoint or (
            f"https://{s.kube_service_host}:{s.kube_service_port}" if s.kube_service_host else ""
        )
        return cls(
            run_dir=s.run_dir,
            checkpoint=s.backing_store,
            conflist_dirs=conflist_dirs(s),
            veth_prefix=s.veth_prefix,
            imds_endpoint=s.imds_endpoint.rstrip("/"),
            api_server=api.rstrip("/"),
            in_container=bool(s.kube_service_host),
            # The AWS SDKs' own variables (ipamd takes the region from IMDS instead).
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "",
            settings_problems=problems,
            pod_eni=s.enable_pod_eni,
            pod_sg_strict=s.pod_sg_enforcing_mode == "strict",
            disable_tcp_early_demux=s.disable_tcp_early_demux,
            ipv6=s.enable_ipv6,
            v4_egress=s.enable_v4_egress,
            v6_egress=s.enable_v6_egress,
        )


@dataclass(kw_only=True)
class DoctorContext:
    host: HostReader
    http: HttpClient
    ec2_for_region: Callable[[str], Ec2DryRun]
    introspection: IntrospectionSource
    config: DoctorConfig
    # Filled by the IMDS check for the checks after it.
    imds: dict[str, str] = field(default_factory=dict)


Check = Callable[[DoctorContext], CheckResult]


def ok(name: str, message: str) -> CheckResult:
    return CheckResult(name=name, status=Status.OK, message=message)


def warn(name: str, message: str, fix: str) -> CheckResult:
    return CheckResult(name=name, status=Status.WARN, message=message, fix=fix)


def fail(name: str, message: str, fix: str) -> CheckResult:
    return CheckResult(name=name, status=Status.FAIL, message=message, fix=fix)


def read_sysctl(ctx: DoctorContext, key: str) -> str | None:
    text = ctx.host.read_text("/proc/sys/" + key.replace(".", "/"))
    return text.strip() if text is not None else None
