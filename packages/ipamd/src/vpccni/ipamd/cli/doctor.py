"""`vpccni doctor`: the checks for what breaks nodes in the field, each with a fix the operator can apply.

Every check reads the node through the seams in `host` (and introspection), never changes anything, and
returns OK, WARN or FAIL with one line that says how to fix it. `run_checks` runs them all; a FAIL makes the
command exit non-zero.
"""

from __future__ import annotations

import enum
import json
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vpccni.ipamd.checkpoint.fileformat import CheckpointError, decode
from vpccni.ipamd.cli.host import Ec2DryRun, HostReader, HttpClient
from vpccni.ipamd.cli.introspect import IntrospectionError, IntrospectionSource, assigned_ips
from vpccni.ipamd.cli.nodepaths import DEFAULT_CONFLIST_DIRS, conflist_dirs
from vpccni.ipamd.settings import read_settings

IMDS_DEFAULT = "http://169.254.169.254"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
CONFLIST_NAME = "10-aws.conflist"
MAC_POLICY_FILES = ("/etc/systemd/network/99-default.link", "/usr/lib/systemd/network/99-default.link")
# The EC2 calls ipamd makes that accept DryRun, with parameters from IMDS when known, and that stay harmless
# even if an endpoint ignored DryRun.
IAM_ACTIONS = (
    "DescribeInstances",
    "DescribeNetworkInterfaces",
    "DescribeSubnets",
    "DescribeInstanceTypes",
    "CreateNetworkInterface",
    "CreateTags",
)
# Not checked: EC2 has no DryRun for the IP calls, and attach/detach/delete need an ENI doctor will not make.
NOT_DRY_RUNNABLE = (
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
)


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


def _ok(name: str, message: str) -> CheckResult:
    return CheckResult(name=name, status=Status.OK, message=message)


def _warn(name: str, message: str, fix: str) -> CheckResult:
    return CheckResult(name=name, status=Status.WARN, message=message, fix=fix)


def _fail(name: str, message: str, fix: str) -> CheckResult:
    return CheckResult(name=name, status=Status.FAIL, message=message, fix=fix)


# ---- settings
def check_settings(ctx: DoctorContext) -> CheckResult:
    name = "settings"
    problems = ctx.config.settings_problems
    if problems:
        return _fail(
            name,
            f"{len(problems)} invalid: " + "; ".join(problems),
            "fix these variables in the aws-node container's environment: ipamd refuses to start with them",
        )
    return _ok(name, "every variable valid (docs/configuration.md)")


# ---- host network
def _rule_count(save_output: str) -> int:
    return sum(1 for line in save_output.splitlines() if line.startswith("-A "))


def check_iptables_mode(ctx: DoctorContext) -> CheckResult:
    name = "iptables mode"
    version = ctx.host.run(["iptables", "--version"])
    if version is None or version.returncode != 0:
        return _fail(name, "iptables is not installed", "install iptables (apt-get install iptables)")
    used = "nft" if "nf_tables" in version.stdout else "legacy"
    counts = {}
    for mode in ("legacy", "nft"):
        saved = ctx.host.run([f"iptables-{mode}-save"])
        counts[mode] = _rule_count(saved.stdout) if saved is not None and saved.returncode == 0 else 0
    other = "legacy" if used == "nft" else "nft"
    if counts[other] > 0 and counts[used] == 0:
        return _fail(
            name,
            f"iptables uses {used} but the host's rules ({counts[other]}) are in {other}",
            f"switch to the host's flavour: update-alternatives --set iptables /usr/sbin/iptables-{other}",
        )
    if counts[other] > 0 and counts[used] > 0:
        return _warn(
            name,
            f"rules in both flavours (legacy {counts['legacy']}, nft {counts['nft']}); iptables uses {used}",
            "make every component (kubelet, kube-proxy, aws-node) use one flavour; remove the other's rules",
        )
    return _ok(name, f"{used} (host rules: legacy {counts['legacy']}, nft {counts['nft']})")


def _sysctl(ctx: DoctorContext, key: str) -> str | None:
    text = ctx.host.read_text("/proc/sys/" + key.replace(".", "/"))
    return text.strip() if text is not None else None


def _primary_ifname(ctx: DoctorContext) -> str:
    routes = ctx.host.run(["ip", "-o", "-4", "route", "show", "default"])
    if routes is not None:
        words = routes.stdout.split()
        if "dev" in words and words.index("dev") + 1 < len(words):
            return words[words.index("dev") + 1]
    return "eth0"


def check_ip_forward(ctx: DoctorContext) -> CheckResult:
    value = _sysctl(ctx, "net.ipv4.ip_forward")
    if value == "1":
        return _ok("ip_forward", "net.ipv4.ip_forward=1")
    return _fail(
        "ip_forward",
        f"net.ipv4.ip_forward={value or 'unreadable'}: pods cannot reach anything off the node",
        "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d/)",
    )


def check_rp_filter(ctx: DoctorContext) -> CheckResult:
    ifname = _primary_ifname(ctx)
    values = [_sysctl(ctx, f"net.ipv4.conf.{n}.rp_filter") for n in ("all", ifname)]
    known = [int(v) for v in values if v is not None and v.isdigit()]
    if not known:
        return _warn("rp_filter", f"cannot read rp_filter for {ifname}", "run doctor as root on the node")
    effective = max(known)  # the kernel uses the larger of conf.all and conf.<if>
    if effective == 1:
        return _fail(
            "rp_filter",
            f"strict reverse-path filtering on {ifname}: "
            "NodePort traffic to pods on secondary ENIs is dropped",
            f"sysctl -w net.ipv4.conf.{ifname}.rp_filter=2 net.ipv4.conf.all.rp_filter=0 "
            "(the aws-vpc-cni init container sets 2)",
        )
    return _ok("rp_filter", f"{ifname}: {effective} ({'loose' if effective == 2 else 'off'})")


def _link_file_policy(text: str) -> str | None:
    section = ""
    policy = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Link]" and line.startswith("MACAddressPolicy="):
            policy = line.partition("=")[2].strip()
    return policy


def check_mac_policy(ctx: DoctorContext) -> CheckResult:
    name = "udev MACAddressPolicy"
    for path in MAC_POLICY_FILES:  # /etc overrides /usr/lib, as systemd resolves it
        text = ctx.host.read_text(path)
        if text is None:
            continue
        policy = _link_file_policy(text)
        if policy in ("persistent", "random"):
            return _warn(
                name,
                f"{path} sets MACAddressPolicy={policy}: udev may rewrite veth MACs (upstream #2103); vpccni "
                "sets the MAC at creation, older plugins and other CNIs on this node break",
                "create /etc/systemd/network/99-default.link with [Match] OriginalName=* and [Link] "
                "NamePolicy=keep kernel database onboard slot path, MACAddressPolicy=none",
            )
        return _ok(name, f"{path}: MACAddressPolicy={policy or 'unset'}")
    return _ok(name, "no systemd 99-default.link (udev does not rewrite veth MACs)")


# ---- AWS
def check_imds(ctx: DoctorContext) -> CheckResult:
    name = "IMDSv2"
    base = ctx.config.imds_endpoint
    try:
        token = ctx.http.request("PUT", f"{base}/latest/api/token", headers={TOKEN_TTL_HEADER: "60"})
    except OSError as exc:
        try:
            v1 = ctx.http.request("GET", f"{base}/latest/meta-data/instance-id")
        except OSError:
            return _fail(
                name,
                f"IMDS at {base} does not answer ({exc})",
                "check the instance's metadata options (http-endpoint enabled) and any host firewall "
                "blocking 169.254.169.254",
            )
        hint = " (aws-node runs in a container)" if ctx.config.in_container else ""
        return _fail(
            name,
            f"IMDSv1 answers ({v1.status}) but the IMDSv2 token reply never arrives{hint}: "
            "the hop limit is too low",
            "aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2",
        )
    if token.status != 200:
        return _fail(name, f"IMDSv2 token request answered {token.status}", "enable IMDSv2 on the instance")
    headers = {TOKEN_HEADER: token.body.strip()}
    found: dict[str, str] = {}
    for key, path in (("instance-id", "instance-id"), ("mac", "mac"), ("region", "placement/region")):
        try:
            reply = ctx.http.request("GET", f"{base}/latest/meta-data/{path}", headers=headers)
        except OSError as exc:
            return _fail(name, f"IMDS {path} failed: {exc}", "check IMDS health on the instance")
        if reply.status == 200:
            found[key] = reply.body.strip()
    mac = found.get("mac")
    if mac:
        for key in ("interface-id", "subnet-id"):
            path = f"network/interfaces/macs/{mac}/{key}"
            try:
                reply = ctx.http.request("GET", f"{base}/latest/meta-data/{path}", headers=headers)
            except OSError:
                continue
            if reply.status == 200:
                found[key] = reply.body.strip()
    ctx.imds.update(found)
    if "instance-id" not in found:
        return _fail(name, "IMDS gave a token but no instance-id", "check the instance's metadata options")
    return _ok(name, f"token and metadata for {found['instance-id']}")


def _dry_run_params(action: str, imds: Mapping[str, str]) -> dict[str, object] | None:
    eni, subnet = imds.get("interface-id"), imds.get("subnet-id")
    if action == "CreateNetworkInterface":
        return {"SubnetId": subnet} if subnet else None
    if action == "AttachNetworkInterface":
        instance = imds.get("instance-id")
        return (
            {"NetworkInterfaceId": eni, "InstanceId": instance, "DeviceIndex": 1}
            if eni and instance
            else None
        )
    if action == "CreateTags":
        return {"Resources": [eni], "Tags": [{"Key": "vpccni-doctor", "Value": "dry-run"}]} if eni else None
    if action == "DescribeInstances" and "instance-id" in imds:
        return {"InstanceIds": [imds["instance-id"]]}
    return {}


def check_ec2(ctx: DoctorContext) -> CheckResult:
    name = "EC2 API and IAM"
    region = ctx.config.region or ctx.imds.get("region", "")
    if not region:
        return _warn(
            name, "no region known (IMDS failed and AWS_REGION unset)", "fix IMDS, or set AWS_REGION"
        )
    ec2 = ctx.ec2_for_region(region)
    denied, errors, allowed, skipped = [], [], [], []
    for action in IAM_ACTIONS:
        params = _dry_run_params(action, ctx.imds)
        if params is None:
            skipped.append(action)
            continue
        outcome = ec2.dry_run(action, params)
        if outcome == "allowed":
            allowed.append(action)
        elif outcome == "denied":
            denied.append(action)
        else:
            errors.append(f"{action}: {outcome.removeprefix('error: ')}")
    if not allowed and not denied:
        return _fail(
            name,
            "EC2 is unreachable: " + "; ".join(errors[:2]),
            "check the route/VPC endpoint to ec2.<region>.amazonaws.com (or AWS_EC2_ENDPOINT) and proxies",
        )
    if denied:
        return _fail(
            name,
            "the node role may not call " + ", ".join(denied),
            "attach AmazonEKS_CNI_Policy (or deploy/iam-policy.json) to the node or IRSA role of aws-node",
        )
    note = f" (not checked: {', '.join([*skipped, *NOT_DRY_RUNNABLE])})"
    if errors:
        return _warn(name, "DryRun errors: " + "; ".join(errors), "see the EC2 error codes above")
    return _ok(name, f"DryRun allowed for {len(allowed)} actions{note}")


def check_api_server(ctx: DoctorContext) -> CheckResult:
    name = "Kubernetes API server"
    url = ctx.config.api_server
    if not url:
        return _warn(
            name,
            "no API server configured (CLUSTER_ENDPOINT or KUBERNETES_SERVICE_HOST)",
            "run doctor inside the aws-node pod, or set CLUSTER_ENDPOINT",
        )
    try:
        reply = ctx.http.request("GET", f"{url}/version", timeout_s=5.0)
    except OSError as exc:
        if "CERTIFICATE" in str(exc).upper():
            return _ok(name, f"{url} answers TLS (certificate not checked by doctor)")
        return _fail(
            name,
            f"{url} is unreachable ({exc}): ipamd serves pods but cannot read their metadata",
            "check the node's security group and route to the control plane, and kube-proxy for the "
            "service IP",
        )
    return _ok(name, f"{url} answered {reply.status}")


# ---- vpccni's own files
def check_conflist(ctx: DoctorContext) -> CheckResult:
    name = "CNI conflist"
    cfg = ctx.config
    for directory in cfg.conflist_dirs:
        path = posixpath.join(directory, CONFLIST_NAME)
        text = ctx.host.read_text(path)
        if text is None:
            continue
        try:
            doc = json.loads(text)
            plugin = doc["plugins"][0]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            return _fail(name, f"{path} is not a valid conflist", "restart aws-node to rewrite it")
        problems = []
        if plugin.get("type") != "aws-cni":
            problems.append(f"first plugin is {plugin.get('type')!r}, not aws-cni")
        socket_path = plugin.get("cniSocket") or "/var/run/aws-node/cni.sock"
        expected = posixpath.join(cfg.run_dir, "cni.sock")
        if socket_path != expected:
            problems.append(f"cniSocket {socket_path} but ipamd serves {expected}")
        if plugin.get("vethPrefix", "eni") != cfg.veth_prefix:
            problems.append(
                f"vethPrefix {plugin.get('vethPrefix')!r} but AWS_VPC_K8S_CNI_VETHPREFIX={cfg.veth_prefix}"
            )
        if problems:
            return _fail(
                name, f"{path}: " + "; ".join(problems), "restart aws-node so it rewrites the conflist"
            )
        first = next(
            (n for n in ctx.host.list_dir(directory) if n.endswith((".conf", ".conflist", ".json"))), ""
        )
        if first and first != CONFLIST_NAME:
            return _warn(
                name,
                f"{first} sorts before {CONFLIST_NAME}: the runtime uses {first}",
                f"remove {posixpath.join(directory, first)} unless you chain it on purpose",
            )
        return _ok(name, f"{path} matches ipamd's settings")
    return _fail(
        name,
        f"no {CONFLIST_NAME} in {', '.join(cfg.conflist_dirs)}",
        "aws-node writes it once ipamd is healthy: check the aws-node pod's logs",
    )


def check_sockets(ctx: DoctorContext) -> CheckResult:
    name = "ipamd sockets"
    problems = []
    for sock in ("cni.sock", "ipamd.sock"):
        path = posixpath.join(ctx.config.run_dir, sock)
        info = ctx.host.stat(path)
        if info is None:
            problems.append(f"{path} missing")
        elif not info.is_socket:
            problems.append(f"{path} is not a socket")
        elif info.mode & 0o007 or info.uid != 0:
            problems.append(f"{path} is mode {info.mode:o} uid {info.uid} (want 660 or stricter, root)")
    if any("missing" in p or "not a socket" in p for p in problems):
        return _fail(name, "; ".join(problems), "ipamd is not running or not initialized: see its log")
    if problems:
        return _fail(
            name, "; ".join(problems), f"chmod 0660 and chown root the sockets in {ctx.config.run_dir}"
        )
    return _ok(name, f"cni.sock and ipamd.sock in {ctx.config.run_dir}, root only")


def check_checkpoint(ctx: DoctorContext) -> CheckResult:
    name = "checkpoint"
    path = ctx.config.checkpoint
    text = ctx.host.read_text(path)
    if text is None:
        return _warn(
            name, f"{path} does not exist or is unreadable", "normal before the first pod; else run as root"
        )
    try:
        entries = decode(text.encode(), source=path)
    except CheckpointError as exc:
        return _fail(name, str(exc), f"move {path} aside and restart aws-node")
    # Branch-ENI pods share the file but not the datastore (`doctor_sgp` checks them against /v1/pods).
    recorded = {str(e.ip) for e in entries if e.branch is None}
    try:
        live = assigned_ips(ctx.introspection.get_json("/v1/enis"))
    except IntrospectionError as exc:
        return _warn(name, f"{len(recorded)} allocations recorded; cannot compare: {exc}", "start aws-node")
    if recorded != live:
        only_cp = sorted(recorded - live)
        only_ds = sorted(live - recorded)
        return _fail(
            name,
            f"checkpoint and datastore differ: only in checkpoint {only_cp[:5]}, only in ipamd {only_ds[:5]}",
            "collect `vpccni support-bundle` and restart aws-node (it restores from the checkpoint)",
        )
    return _ok(name, f"{len(recorded)} allocations, same as ipamd's datastore")


ALL_CHECKS: tuple[Check, ...] = (
    check_settings,
    check_iptables_mode,
    check_rp_filter,
    check_ip_forward,
    check_mac_policy,
    check_imds,
    check_ec2,
    check_api_server,
    check_conflist,
    check_sockets,
    check_checkpoint,
)


def run_checks(ctx: DoctorContext, checks: tuple[Check, ...] = ALL_CHECKS) -> list[CheckResult]:
    results = []
    for check in checks:
        try:
            results.append(check(ctx))
        except Exception as exc:  # one broken probe must not hide the other checks
            results.append(
                _fail(check.__name__.removeprefix("check_"), f"check crashed: {exc!r}", "report a bug")
            )
    return results


def render(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"[{r.status.value:^4}] {r.name}: {r.message}")
        if r.fix and r.status is not Status.OK:
            lines.append(f"       fix: {r.fix}")
    fails = sum(r.status is Status.FAIL for r in results)
    warns = sum(r.status is Status.WARN for r in results)
    lines.append(f"{len(results)} checks: {fails} failed, {warns} warnings")
    return "\n".join(lines) + "\n"
