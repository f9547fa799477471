"""`vpccni doctor`: the checks for what breaks nodes in the field, each with a fix the operator can apply.

Every check reads the node through the seams in `host` (and introspection), never changes anything, and
returns OK, WARN or FAIL with one line that says how to fix it. `run_checks` runs them all; a FAIL makes the
command exit non-zero. The checks of the node are in `doctor_host`, of the services it reaches in
`doctor_services`, of IPv6 and security groups for pods in `doctor_ipv6` and `doctor_sgp`; what they share
(config, context, result) in `doctor_context`.
"""

from __future__ import annotations

from vpccni.ipamd.cli.doctor_context import Check, CheckResult, DoctorContext, Status, fail, ok
from vpccni.ipamd.cli.doctor_host import (
    check_checkpoint,
    check_conflist,
    check_ip_forward,
    check_iptables_mode,
    check_mac_policy,
    check_rp_filter,
    check_sockets,
)
from vpccni.ipamd.cli.doctor_services import check_api_server, check_ec2, check_imds


# ---- settings
def check_settings(ctx: DoctorContext) -> CheckResult:
    name = "settings"
    problems = ctx.config.settings_problems
    if problems:
        return fail(
            name,
            f"{len(problems)} invalid: " + "; ".join(problems),
            "fix these variables in the aws-node container's environment: ipamd refuses to start with them",
        )
    return ok(name, "every variable valid (docs/configuration.md)")


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
                fail(check.__name__.removeprefix("check_"), f"check crashed: {exc!r}", "report a bug")
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
