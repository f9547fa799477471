"""`vpccni doctor` for security groups for pods (ENABLE_POD_ENI): the trunk ENI, each branch-ENI pod's VLAN
link and rules, the local rule of strict mode, and tcp_early_demux for kubelet's probes."""

from __future__ import annotations

from vpccni.ipamd.cli.doctor_context import Check, CheckResult, DoctorContext, fail, ok, read_sysctl, warn
from vpccni.ipamd.cli.host import CommandResult
from vpccni.ipamd.cli.introspect import IntrospectionError

OFF = "security groups for pods is off (ENABLE_POD_ENI)"


def check_trunk(ctx: DoctorContext) -> CheckResult:
    name = "trunk ENI"
    if not ctx.config.pod_eni:
        return ok(name, OFF)
    try:
        cards = ctx.introspection.get_json("/v1/enis")
    except IntrospectionError as exc:
        return warn(name, f"cannot read ipamd's ENIs: {exc}", "start aws-node")
    trunks = [
        eni_id
        for infos in cards.values()
        for eni_id, eni in (infos.get("ENIs") or {}).items()
        if eni.get("IsTrunk")
    ]
    if trunks:
        return ok(name, f"{trunks[0]} attached: branch-ENI pods can run")
    return fail(
        name,
        "no trunk ENI is attached: pods a SecurityGroupPolicy selects fail with 'no trunk ENI'",
        "check that this node's CNINode lists SecurityGroupsForPods (kubectl get cninode <node> -o yaml), "
        "that the VPC resource controller runs, that an ENI slot is free (MAX_ENI, WARM_ENI_TARGET) and "
        "that the instance type is trunking compatible",
    )


def check_branch_pods(ctx: DoctorContext) -> CheckResult:
    name = "branch-ENI pods"
    if not ctx.config.pod_eni:
        return ok(name, OFF)
    try:
        pods = [p for p in ctx.introspection.get_json("/v1/pods") if p.get("vlanId")]
    except IntrospectionError as exc:
        return warn(name, f"cannot read ipamd's pods: {exc}", "start aws-node")
    links = ctx.host.run(["ip", "-o", "link", "show"])
    rules = _rules(ctx)
    if links is None or rules is None:
        return warn(name, "iproute2 is not installed", "install iproute2")
    broken = []
    for pod in pods:
        vlan = int(pod["vlanId"])
        missing = []
        if f" vlan.eth.{vlan}@" not in links.stdout and f" vlan.eth.{vlan}:" not in links.stdout:
            missing.append(f"link vlan.eth.{vlan}")
        if f"lookup {vlan + 100}" not in rules.stdout:
            missing.append(f"rules to table {vlan + 100}")
        if missing:
            broken.append(f"{pod.get('namespace')}/{pod.get('name')} ({pod.get('ip')}): {', '.join(missing)}")
    if broken:
        return fail(
            name,
            f"{len(broken)} of {len(pods)} without their wiring: " + "; ".join(broken[:5]),
            "delete those pods (their sandbox is recreated and wired again); collect `vpccni support-bundle` "
            "if it happens again",
        )
    return ok(name, f"{len(pods)} pods, each with its VLAN link and rules")


def check_local_rule(ctx: DoctorContext) -> CheckResult:
    name = "local rule (strict mode)"
    if not ctx.config.pod_eni or not ctx.config.pod_sg_strict:
        return ok(name, OFF if not ctx.config.pod_eni else "standard mode: the kernel's rule at 0 stays")
    rules = _rules(ctx)
    if rules is None:
        return warn(name, "iproute2 is not installed", "install iproute2")
    lines = [line.split() for line in rules.stdout.splitlines()]
    local = {words[0].rstrip(":") for words in lines if words[1:] == ["from", "all", "lookup", "local"]}
    if ctx.config.ipv6 and not any(w[1:3] == ["from", "fe80:ec2::1"] and w[-1:] == ["local"] for w in lines):
        return fail(
            name,
            "no `from fe80:ec2::1 ipproto ipv6-icmp lookup local` rule: strict-mode VLAN links cannot "
            "resolve EC2's router, so branch pods have no network",
            "restart aws-node (it adds the rule at start)",
        )
    if local == {"20"}:
        return ok(name, "from all lookup local at priority 20, below the VLAN rules (10)")
    return fail(
        name,
        f"the local table's rule is at priority {', '.join(sorted(local)) or 'none'}, not 20: a strict-mode "
        "branch pod's traffic to this node's addresses skips its branch ENI's security groups",
        "restart aws-node (it moves the rule at start), and check that nothing else re-adds `0: from all "
        "lookup local`",
    )


def _rules(ctx: DoctorContext) -> CommandResult | None:
    """`ip rule` of the node's family (an IPv6 node's branch pods have IPv6 rules)."""
    return ctx.host.run(["ip", "-6" if ctx.config.ipv6 else "-4", "rule", "show"])


def check_tcp_early_demux(ctx: DoctorContext) -> CheckResult:
    name = "tcp_early_demux"
    if not ctx.config.pod_eni or not ctx.config.pod_sg_strict:
        return ok(name, OFF if not ctx.config.pod_eni else "standard mode: probes stay on the node")
    value = read_sysctl(ctx, "net.ipv4.tcp_early_demux")
    if value == "1":
        return warn(
            name,
            "net.ipv4.tcp_early_demux=1: kubelet's TCP probes to strict-mode branch pods can fail",
            "set DISABLE_TCP_EARLY_DEMUX=true on the aws-vpc-cni-init container (it writes 0)",
        )
    return ok(name, f"net.ipv4.tcp_early_demux={value or 'absent'}")


SGP_CHECKS: tuple[Check, ...] = (check_trunk, check_branch_pods, check_local_rule, check_tcp_early_demux)
