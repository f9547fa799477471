"""`vpccni doctor` for IPv6 clusters and IPv6 egress (ENABLE_IPv6, ENABLE_V4_EGRESS, ENABLE_V6_EGRESS)."""

from __future__ import annotations

from vpccni.ipamd.cli.doctor_context import Check, CheckResult, DoctorContext, fail, ok, read_sysctl, warn
from vpccni.ipamd.cli.introspect import IntrospectionError


def check_ipv6(ctx: DoctorContext) -> CheckResult:
    """IPv6 mode and egress: the node forwards IPv6, ipamd holds a /80, the egress SNAT chain is there."""
    name = "IPv6 and egress"
    cfg = ctx.config
    if not (cfg.ipv6 or cfg.v6_egress):
        return ok(name, "an IPv4 cluster without IPv6 egress: nothing to check")
    problems, fixes = [], []
    if read_sysctl(ctx, "net.ipv6.conf.all.forwarding") != "1":
        problems.append("net.ipv6.conf.all.forwarding is not 1: the node does not forward the pods' IPv6")
        fixes.append("restart aws-node (it sets it), or sysctl -w net.ipv6.conf.all.forwarding=1")
    if cfg.ipv6:
        try:
            enis = ctx.introspection.get_json("/v1/enis")
        except IntrospectionError as exc:
            return warn(name, f"cannot read ipamd's ENIs: {exc}", "start aws-node")
        prefixes = [c for card in enis.values() for eni in (card.get("ENIs") or {}).values()
                    for c in eni.get("IPv6Cidrs") or {}]  # fmt: skip
        if not prefixes:
            problems.append("ipamd holds no IPv6 /80: pods get no address")
            fixes.append("check ipamd's log for AssignIpv6Addresses errors (Nitro instance, subnet /64, IAM)")
    chain, tool = ("AWS-EGRESS-4", "iptables-save") if cfg.ipv6 else ("AWS-EGRESS-6", "ip6tables-save")
    if cfg.v6_egress or (cfg.ipv6 and cfg.v4_egress):
        saved = ctx.host.run([tool, "-t", "nat"])
        if saved is None or saved.returncode != 0 or f"-j {chain}" not in saved.stdout:
            problems.append(f"no {chain} SNAT chain in {tool.removesuffix('-save')}: pods have no egress")
            fixes.append("restart aws-node (it writes the egress rules at start)")
    if problems:
        return fail(name, "; ".join(problems), "; ".join(fixes))
    mode = "IPv6 cluster" if cfg.ipv6 else "IPv4 cluster with IPv6 egress"
    return ok(
        name, f"{mode}: forwarding on" + (", a /80 in ipamd" if cfg.ipv6 else "") + f", {chain} in place"
    )


IPV6_CHECKS: tuple[Check, ...] = (check_ipv6,)
