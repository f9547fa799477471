"""`vpccni doctor`: the checks of the node itself: its host network (iptables flavour, forwarding,
reverse-path filter, udev's MAC policy) and vpccni's own files (conflist, sockets, checkpoint)."""

from __future__ import annotations

import json
import posixpath

from vpccni.ipamd.checkpoint.fileformat import CheckpointError, decode
from vpccni.ipamd.cli.doctor_context import CheckResult, DoctorContext, fail, ok, read_sysctl, warn
from vpccni.ipamd.cli.introspect import IntrospectionError, assigned_ips

CONFLIST_NAME = "10-aws.conflist"
MAC_POLICY_FILES = ("/etc/systemd/network/99-default.link", "/usr/lib/systemd/network/99-default.link")


# ---- host network
def _rule_count(save_output: str) -> int:
    return sum(1 for line in save_output.splitlines() if line.startswith("-A "))


def check_iptables_mode(ctx: DoctorContext) -> CheckResult:
    name = "iptables mode"
    version = ctx.host.run(["iptables", "--version"])
    if version is None or version.returncode != 0:
        return fail(name, "iptables is not installed", "install iptables (apt-get install iptables)")
    used = "nft" if "nf_tables" in version.stdout else "legacy"
    counts = {}
    for mode in ("legacy", "nft"):
        saved = ctx.host.run([f"iptables-{mode}-save"])
        counts[mode] = _rule_count(saved.stdout) if saved is not None and saved.returncode == 0 else 0
    other = "legacy" if used == "nft" else "nft"
    if counts[other] > 0 and counts[used] == 0:
        return fail(
            name,
            f"iptables uses {used} but the host's rules ({counts[other]}) are in {other}",
            f"switch to the host's flavour: update-alternatives --set iptables /usr/sbin/iptables-{other}",
        )
    if counts[other] > 0 and counts[used] > 0:
        return warn(
            name,
            f"rules in both flavours (legacy {counts['legacy']}, nft {counts['nft']}); iptables uses {used}",
            "make every component (kubelet, kube-proxy, aws-node) use one flavour; remove the other's rules",
        )
    return ok(name, f"{used} (host rules: legacy {counts['legacy']}, nft {counts['nft']})")


def _primary_ifname(ctx: DoctorContext) -> str:
    routes = ctx.host.run(["ip", "-o", "-4", "route", "show", "default"])
    if routes is not None:
        words = routes.stdout.split()
        if "dev" in words and words.index("dev") + 1 < len(words):
            return words[words.index("dev") + 1]
    return "eth0"


def check_ip_forward(ctx: DoctorContext) -> CheckResult:
    value = read_sysctl(ctx, "net.ipv4.ip_forward")
    if value == "1":
        return ok("ip_forward", "net.ipv4.ip_forward=1")
    return fail(
        "ip_forward",
        f"net.ipv4.ip_forward={value or 'unreadable'}: pods cannot reach anything off the node",
        "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d/)",
    )


def check_rp_filter(ctx: DoctorContext) -> CheckResult:
    ifname = _primary_ifname(ctx)
    values = [read_sysctl(ctx, f"net.ipv4.conf.{n}.rp_filter") for n in ("all", ifname)]
    known = [int(v) for v in values if v is not None and v.isdigit()]
    if not known:
        return warn("rp_filter", f"cannot read rp_filter for {ifname}", "run doctor as root on the node")
    effective = max(known)  # the kernel uses the larger of conf.all and conf.<if>
    if effective == 1:
        return fail(
            "rp_filter",
            f"strict reverse-path filtering on {ifname}: "
            "NodePort traffic to pods on secondary ENIs is dropped",
            f"sysctl -w net.ipv4.conf.{ifname}.rp_filter=2 net.ipv4.conf.all.rp_filter=0 "
            "(the aws-vpc-cni init container sets 2)",
        )
    return ok("rp_filter", f"{ifname}: {effective} ({'loose' if effective == 2 else 'off'})")


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
            return warn(
                name,
                f"{path} sets MACAddressPolicy={policy}: udev may rewrite veth MACs (upstream #2103); vpccni "
                "sets the MAC at creation, older plugins and other CNIs on this node break",
                "create /etc/systemd/network/99-default.link with [Match] OriginalName=* and [Link] "
                "NamePolicy=keep kernel database onboard slot path, MACAddressPolicy=none",
            )
        return ok(name, f"{path}: MACAddressPolicy={policy or 'unset'}")
    return ok(name, "no systemd 99-default.link (udev does not rewrite veth MACs)")


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
            return fail(name, f"{path} is not a valid conflist", "restart aws-node to rewrite it")
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
            return fail(
                name, f"{path}: " + "; ".join(problems), "restart aws-node so it rewrites the conflist"
            )
        first = next(
            (n for n in ctx.host.list_dir(directory) if n.endswith((".conf", ".conflist", ".json"))), ""
        )
        if first and first != CONFLIST_NAME:
            return warn(
                name,
                f"{first} sorts before {CONFLIST_NAME}: the runtime uses {first}",
                f"remove {posixpath.join(directory, first)} unless you chain it on purpose",
            )
        return ok(name, f"{path} matches ipamd's settings")
    return fail(
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
        return fail(name, "; ".join(problems), "ipamd is not running or not initialized: see its log")
    if problems:
        return fail(
            name, "; ".join(problems), f"chmod 0660 and chown root the sockets in {ctx.config.run_dir}"
        )
    return ok(name, f"cni.sock and ipamd.sock in {ctx.config.run_dir}, root only")


def check_checkpoint(ctx: DoctorContext) -> CheckResult:
    name = "checkpoint"
    path = ctx.config.checkpoint
    text = ctx.host.read_text(path)
    if text is None:
        return warn(
            name, f"{path} does not exist or is unreadable", "normal before the first pod; else run as root"
        )
    try:
        entries = decode(text.encode(), source=path)
    except CheckpointError as exc:
        return fail(name, str(exc), f"move {path} aside and restart aws-node")
    # Branch-ENI pods share the file but not the datastore (`doctor_sgp` checks them against /v1/pods).
    recorded = {str(e.ip) for e in entries if e.branch is None}
    try:
        live = assigned_ips(ctx.introspection.get_json("/v1/enis"))
    except IntrospectionError as exc:
        return warn(name, f"{len(recorded)} allocations recorded; cannot compare: {exc}", "start aws-node")
    if recorded != live:
        only_cp = sorted(recorded - live)
        only_ds = sorted(live - recorded)
        return fail(
            name,
            f"checkpoint and datastore differ: only in checkpoint {only_cp[:5]}, only in ipamd {only_ds[:5]}",
            "collect `vpccni support-bundle` and restart aws-node (it restores from the checkpoint)",
        )
    return ok(name, f"{len(recorded)} allocations, same as ipamd's datastore")
