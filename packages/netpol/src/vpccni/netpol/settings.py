"""The agent's and the controller's settings: every flag and environment variable declared once in a table
(for parsing, validation and `docs/configuration.md`), read once at the entry point into a frozen object.

Flags keep upstream's names (`aws-network-policy-agent`, `amazon-network-policy-controller-k8s`); an upstream
flag for a feature this version does not offer is refused when set to a non-default value.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vpccni.k8sapi.config import KubeEndpoint


class SettingsError(ValueError):
    """One or more invalid settings; the message lists every problem."""


class EnforcingMode(enum.Enum):
    STANDARD = "standard"
    STRICT = "strict"


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise ValueError("expected true or false")


def _mode(raw: str) -> EnforcingMode:
    low = raw.strip().lower()
    if low in ("", "none"):  # upstream: "none"/unset means the CNI skips the agent; nothing is strict
        return EnforcingMode.STANDARD
    try:
        return EnforcingMode(low)
    except ValueError:
        raise ValueError("expected standard or strict") from None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected an integer > 0")
    return value


def _seconds(raw: str) -> float:
    text = raw.strip()
    value = float(text[:-2]) / 1000 if text.endswith("ms") else float(text.removesuffix("s"))
    if value < 0:
        raise ValueError("expected seconds >= 0 (e.g. 0.02, 20ms, 1s)")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("expected a port number")
    return value


def _bind(raw: str) -> str:
    """`host:port`, `:port` or upstream's bare `port`."""
    text = raw.strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, :port or a port number")
    return f"{host}:{port}"


def _unsupported(feature: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        if _bool(raw):
            raise ValueError(f"{feature} is not supported by this version; leave it false")
        return False

    return parse


@dataclass(frozen=True, kw_only=True)
class Option:
    attr: str | None  # field of the settings object; None: accepted for compatibility, validated only
    parse: Callable[[str], Any]
    default: str
    meaning: str
    flag: str = ""  # --name
    env: str = ""  # or an environment variable (the flag wins when both are given)


LOG_FILE = "/var/log/aws-routed-eni/network-policy-agent.log"
LEVELS = "debug, info, warning, error"

# fmt: off
KUBE_OPTIONS: tuple[Option, ...] = (  # where the API server is, as ipamd finds it (vpccni.k8sapi.config)
    Option(attr="kubeconfig", parse=str, default="", flag="kubeconfig", env="KUBECONFIG",
           meaning="kubeconfig file, used outside a pod when CLUSTER_ENDPOINT is unset"),
    Option(attr="cluster_endpoint", parse=str, default="", env="CLUSTER_ENDPOINT",
           meaning="API server URL; beats the in-cluster service address"),
    Option(attr="service_host", parse=str, default="", env="KUBERNETES_SERVICE_HOST",
           meaning="in-cluster API server address (set by Kubernetes)"),
    Option(attr="service_port", parse=_port, default="443", env="KUBERNETES_SERVICE_PORT",
           meaning="in-cluster API server port (set by Kubernetes)"),
)

AGENT_OPTIONS: tuple[Option, ...] = (
    Option(attr="enabled", parse=_bool, default="false",
           flag="enable-network-policy", env="ENABLE_NETWORK_POLICY",
           meaning="enforce network policy (Helm `enableNetworkPolicy`); false removes the agent's table and "
                   "answers the CNI's calls with success"),
    Option(attr="mode", parse=_mode, default="standard", env="NETWORK_POLICY_ENFORCING_MODE",
           meaning="`standard`: a pod is open until a policy selects it; `strict`: a pod created through the "
                   "CNI is denied both ways until a policy selects it"),
    Option(attr="node_name", parse=str, default="", env="MY_NODE_NAME",
           meaning="this node's name (fieldRef spec.nodeName): whose pods to enforce"),
    Option(attr="veth_prefix", parse=str, default="eni", env="AWS_VPC_K8S_CNI_VETHPREFIX",
           meaning="prefix of the pods' host-side veth names (as ipamd's)"),
    Option(attr="run_dir", parse=Path, default="/var/run/aws-node", env="VPCCNI_RUN_DIR",
           meaning="holds npa.sock, the NPBackend gRPC socket the CNI calls"),
    Option(attr="grpc_tcp_address", parse=_bind, default="", env="VPCCNI_NP_AGENT_TCP_ADDRESS",
           meaning="also serve NPBackend on TCP, e.g. 127.0.0.1:50052 for upstream plugins before v1.23"),
    Option(attr="metrics_address", parse=_bind, default=":8162", flag="metrics-bind-addr",
           meaning="Prometheus metrics listen address"),
    Option(attr="health_address", parse=_bind, default=":8163", flag="health-probe-bind-addr",
           meaning="/healthz and /readyz listen address"),
    Option(attr="introspection_address", parse=_bind, default="127.0.0.1:61680",
           env="VPCCNI_NETPOL_INTROSPECTION_ADDRESS",
           meaning="the agent's introspection (`vpccni policy` reads a pod's effective policy here)"),
    Option(attr="enforce_timeout_s", parse=_seconds, default="5", env="VPCCNI_NETPOL_ENFORCE_TIMEOUT",
           meaning="longest an EnforceNpToPod call waits for the pod's rules to be in the kernel"),
    Option(attr="log_file", parse=str, default=LOG_FILE, flag="log-file",
           meaning="log file (`stdout` logs to standard output)"),
    Option(attr="log_level", parse=str.lower, default="info", flag="log-level", meaning=LEVELS),
    Option(attr=None, parse=_unsupported("IPv6 mode"), default="false", flag="enable-ipv6",
           meaning="IPv6 mode (not offered)"),
    Option(attr=None, parse=_unsupported("streaming policy decisions to CloudWatch"), default="false",
           flag="enable-cloudwatch-logs", meaning="CloudWatch policy decision logs (not offered)"),
    Option(attr=None, parse=_unsupported("policy decision logs"), default="false",
           flag="enable-policy-event-logs",
           meaning="per-flow policy decision logs (not offered; `vpccni policy` explains decisions)"),
    *KUBE_OPTIONS,
)

CONTROLLER_OPTIONS: tuple[Option, ...] = (
    Option(attr="chunk_size", parse=_positive_int, default="200", flag="endpoint-chunk-size",
           meaning="endpoints per PolicyEndpoint object before a policy is split across several"),
    Option(attr="batch_s", parse=_seconds, default="20ms", flag="pod-update-batch-period-duration",
           meaning="how long a reconcile round waits to gather more changes after the first"),
    Option(attr="health_address", parse=_bind, default=":8081", flag="health-probe-bind-address",
           meaning="/healthz and /readyz listen address"),
    Option(attr="log_level", parse=str.lower, default="info", flag="log-level", meaning=LEVELS),
    Option(attr="leader_election", parse=_bool, default="true", flag="enable-leader-election",
           meaning="only the replica holding the Lease writes PolicyEndpoints; the others stand by"),
    Option(attr="leader_election_id", parse=str, default="amazon-network-policy-controller-k8s",
           flag="leader-election-id", meaning="name of the coordination.k8s.io Lease"),
    Option(attr="leader_election_namespace", parse=str, default="", flag="leader-election-namespace",
           env="POD_NAMESPACE",
           meaning="namespace of the Lease; default: the pod's own (the service account's namespace file)"),
    *KUBE_OPTIONS,
)
# fmt: on


@dataclass(frozen=True, kw_only=True)
class KubeFields:
    kubeconfig: str = ""
    cluster_endpoint: str = ""
    service_host: str = ""
    service_port: int = 443

    @property
    def kube_endpoint(self) -> KubeEndpoint:
        return KubeEndpoint(
            cluster_endpoint=self.cluster_endpoint,
            kubeconfig=self.kubeconfig,
            service_host=self.service_host,
            service_port=self.service_port,
        )


@dataclass(frozen=True, kw_only=True)
class AgentSettings(KubeFields):
    enabled: bool = False
    mode: EnforcingMode = EnforcingMode.STANDARD
    node_name: str = ""
    veth_prefix: str = "eni"
    run_dir: Path = Path("/var/run/aws-node")
    grpc_tcp_address: str = ""
    metrics_address: str = ":8162"
    health_address: str = ":8163"
    introspection_address: str = "127.0.0.1:61680"
    enforce_timeout_s: float = 5.0
    log_file: str = LOG_FILE
    log_level: str = "info"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "npa.sock"


@dataclass(frozen=True, kw_only=True)
class ControllerSettings(KubeFields):
    chunk_size: int = 200
    batch_s: float = 0.02
    health_address: str = ":8081"
    log_level: str = "info"
    leader_election: bool = True
    leader_election_id: str = "amazon-network-policy-controller-k8s"
    leader_election_namespace: str = ""


def _load(
    options: Sequence[Option], argv: Sequence[str], env: Mapping[str, str], prog: str
) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog=prog)
    for opt in options:
        if opt.flag:
            parser.add_argument(
                f"--{opt.flag}", dest=opt.flag, default=None, metavar="VALUE", help=opt.meaning
            )
    args = vars(parser.parse_args(list(argv)))
    values: dict[str, Any] = {}
    problems: list[str] = []
    for opt in options:
        raw = args.get(opt.flag) if opt.flag else None
        where = f"--{opt.flag}"
        if raw is None and opt.env and env.get(opt.env, "") != "":
            raw, where = env[opt.env], opt.env
        if raw is None:
            raw = opt.default
        try:
            value = opt.parse(raw)
        except ValueError as exc:
            problems.append(f"{where}={raw!r}: {exc}")
            continue
        if opt.attr is not None:
            values[opt.attr] = value
    if problems:
        raise SettingsError(f"{prog}: invalid settings:\n  " + "\n  ".join(problems))
    return values


def load_agent_settings(argv: Sequence[str], env: Mapping[str, str]) -> AgentSettings:
    values = _load(AGENT_OPTIONS, argv, env, "aws-network-policy-agent")
    settings = AgentSettings(**values)
    if settings.enabled and not settings.node_name:
        raise SettingsError(
            "aws-network-policy-agent: MY_NODE_NAME is required with --enable-network-policy=true"
        )
    if not 1 <= len(settings.veth_prefix) <= 4:
        raise SettingsError("aws-network-policy-agent: AWS_VPC_K8S_CNI_VETHPREFIX must be 1-4 characters")
    return settings


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def load_controller_settings(
    argv: Sequence[str], env: Mapping[str, str], *, namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE
) -> ControllerSettings:
    settings = ControllerSettings(**_load(CONTROLLER_OPTIONS, argv, env, "vpccni-netpol-controller"))
    if not settings.leader_election or settings.leader_election_namespace:
        return settings
    try:
        namespace = namespace_file.read_text().strip()
    except OSError:
        namespace = ""
    if not namespace:
        raise SettingsError(
            "vpccni-netpol-controller: leader election needs the Lease's namespace and this process is not "
            "in a pod: set --leader-election-namespace (or POD_NAMESPACE), or --enable-leader-election=false "
            "for a single replica"
        )
    return replace(settings, leader_election_namespace=namespace)
