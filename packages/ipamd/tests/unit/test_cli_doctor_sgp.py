"""`vpccni doctor` with security groups for pods: trunk, branch-ENI pod wiring, local rule, tcp_early_demux
on a fake node, healthy and broken."""

from __future__ import annotations

from vpccni.ipamd.cli.doctor_context import DoctorConfig, DoctorContext, Status
from vpccni.ipamd.cli.doctor_sgp import SGP_CHECKS
from vpccni.ipamd.cli.host import CommandResult
from vpccni.ipamd.cli.testing import FakeEc2, FakeHost, FakeHttp, FakeIntrospection

LINKS = (
    "2: eth0: <BROADCAST,UP> mtu 9001\n"
    "5: eth2: <BROADCAST,UP> mtu 9001\n"
    "9: vlan.eth.7@eth2: <BROADCAST,UP> mtu 9001\n"
)
RULES = (
    "10:\tfrom all iif vlan.eth.7 lookup 107\n"
    "10:\tfrom all iif vlanab12 lookup 107\n"
    "20:\tfrom all lookup local\n"
)


def _ok(stdout: str) -> CommandResult:
    return CommandResult(returncode=0, stdout=stdout, stderr="")


def node(
    *, trunk: bool = True, links: str = LINKS, rules: str = RULES, demux: str = "0", ipv6: bool = False
) -> DoctorContext:
    host = FakeHost()
    host.commands[("ip", "-o", "link", "show")] = _ok(links)
    host.commands[("ip", "-6" if ipv6 else "-4", "rule", "show")] = _ok(rules)
    host.set_sysctl("net.ipv4.tcp_early_demux", demux)
    enis = {"eni-p": {"ID": "eni-p", "IsPrimary": True}}
    if trunk:
        enis["eni-t"] = {"ID": "eni-t", "IsTrunk": True}
    pods = [
        {"namespace": "db", "name": "orders", "ip": "10.0.16.40", "vlanId": 7},
        {"namespace": "default", "name": "web", "ip": "10.0.0.11", "vlanId": 0},
    ]
    return DoctorContext(
        host=host, http=FakeHttp(), ec2_for_region=lambda r: FakeEc2(),
        introspection=FakeIntrospection(docs={"/v1/enis": {"0": {"ENIs": enis}}, "/v1/pods": pods}),
        config=DoctorConfig(pod_eni=True, disable_tcp_early_demux=True, ipv6=ipv6),
    )  # fmt: skip


def run(ctx: DoctorContext) -> dict[str, tuple[Status, str, str]]:
    return {r.name: (r.status, r.message, r.fix) for r in (check(ctx) for check in SGP_CHECKS)}


def test_a_healthy_node_passes_every_check() -> None:
    assert {name: status for name, (status, _, _) in run(node()).items()} == {
        "trunk ENI": Status.OK, "branch-ENI pods": Status.OK, "local rule (strict mode)": Status.OK,
        "tcp_early_demux": Status.OK,
    }  # fmt: skip


def test_each_problem_is_named_with_its_fix() -> None:
    results = run(node(trunk=False, links="2: eth0: <UP>\n", rules="0:\tfrom all lookup local\n", demux="1"))
    status, message, fix = results["trunk ENI"]
    assert status is Status.FAIL and "no trunk ENI" in message and "SecurityGroupsForPods" in fix
    status, message, _ = results["branch-ENI pods"]
    assert status is Status.FAIL and "db/orders (10.0.16.40): link vlan.eth.7, rules to table 107" in message
    status, message, fix = results["local rule (strict mode)"]
    assert status is Status.FAIL and "priority 0, not 20" in message and "restart aws-node" in fix
    status, _, fix = results["tcp_early_demux"]
    assert status is Status.WARN and "DISABLE_TCP_EARLY_DEMUX=true" in fix


def test_off_and_standard_mode() -> None:
    off = node()
    off.config = DoctorConfig(pod_eni=False)
    assert all(status is Status.OK for status, _, _ in run(off).values())
    standard = node(rules="0:\tfrom all lookup local\n10:\tfrom all iif vlan.eth.7 lookup 107\n", demux="1")
    standard.config = DoctorConfig(pod_eni=True, pod_sg_strict=False)
    results = run(standard)
    assert results["local rule (strict mode)"][0] is Status.OK and results["tcp_early_demux"][0] is Status.OK


def test_an_ipv6_node_is_checked_on_its_ipv6_rules_with_the_router_ndp_rule() -> None:
    router = "0:\tfrom fe80:ec2::1 ipproto ipv6-icmp lookup local\n"
    assert run(node(ipv6=True, rules=router + RULES))["local rule (strict mode)"][0] is Status.OK
    assert run(node(ipv6=True, rules=router + RULES))["branch-ENI pods"][0] is Status.OK
    status, message, fix = run(node(ipv6=True))["local rule (strict mode)"]
    assert status is Status.FAIL and "fe80:ec2::1" in message and "restart aws-node" in fix
