"""`vpccni doctor`: every check on a fake node, healthy and broken, with the fix it proposes."""

from __future__ import annotations

import io
from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.checkpoint.fileformat import encode
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.cli import doctor, doctor_host, doctor_services
from vpccni.ipamd.cli.doctor_context import CheckResult, DoctorConfig, DoctorContext, Status
from vpccni.ipamd.cli.doctor_ipv6 import check_ipv6
from vpccni.ipamd.cli.host import CommandResult, FileInfo, HttpReply
from vpccni.ipamd.cli.main import CliDeps, run
from vpccni.ipamd.cli.testing import FakeEc2, FakeHost, FakeHttp, FakeIntrospection
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.ports import EniRecord

IMDS = "http://169.254.169.254"
MAC = "0a:00:00:00:00:01"


def _ok(stdout: str = "") -> CommandResult:
    return CommandResult(returncode=0, stdout=stdout, stderr="")


def healthy_node() -> tuple[FakeHost, FakeHttp, FakeEc2, FakeIntrospection]:
    checkpointer = MemoryCheckpointer()
    ds = DataStore(checkpointer=checkpointer, clock=FakeClock())
    ds.add_eni(
        EniRecord(eni_id="eni-a", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_cidrs("eni-a", [IPv4Network("10.0.0.11/32"), IPv4Network("10.0.0.12/32")], is_prefix=False)
    ds.assign(
        IPAMKey(network_name="aws-cni", container_id="c1", ifname="eth0"),
        PodMetadata(namespace="d", name="p"),
    )
    assert checkpointer.data is not None
    host = FakeHost(env={"AWS_REGION": "us-west-2", "CLUSTER_ENDPOINT": "https://api.example:443"})
    host.commands[("iptables", "--version")] = _ok("iptables v1.8.9 (nf_tables)\n")
    host.commands[("iptables-nft-save",)] = _ok("*nat\n-A POSTROUTING -j AWS-SNAT-CHAIN-0\nCOMMIT\n")
    host.commands[("iptables-legacy-save",)] = _ok("")
    host.commands[("ip", "-o", "-4", "route", "show", "default")] = _ok(
        "default via 10.0.0.1 dev ens5 proto dhcp\n"
    )
    host.set_sysctl("net.ipv4.ip_forward", "1")
    host.set_sysctl("net.ipv4.conf.all.rp_filter", "0")
    host.set_sysctl("net.ipv4.conf.ens5.rp_filter", "2")
    host.files["/etc/cni/net.d/10-aws.conflist"] = (
        '{"cniVersion":"0.4.0","name":"aws-cni","plugins":[{"type":"aws-cni","vethPrefix":"eni"},'
        '{"type":"portmap"}]}'
    )
    for sock in ("cni.sock", "ipamd.sock"):
        host.stats[f"/var/run/aws-node/{sock}"] = FileInfo(mode=0o660, uid=0, gid=0, is_socket=True)
    host.files["/var/run/aws-node/ipam.json"] = checkpointer.data.decode()
    http = FakeHttp()
    http.replies[("PUT", f"{IMDS}/latest/api/token")] = HttpReply(status=200, body="tok")
    for path, body in {
        "instance-id": "i-0abc",
        "mac": MAC,
        "placement/region": "us-west-2",
        f"network/interfaces/macs/{MAC}/interface-id": "eni-a",
        f"network/interfaces/macs/{MAC}/subnet-id": "subnet-1",
    }.items():
        http.replies[("GET", f"{IMDS}/latest/meta-data/{path}")] = HttpReply(status=200, body=body)
    http.replies[("GET", "https://api.example:443/version")] = HttpReply(status=401, body="")
    intro = FakeIntrospection(docs={"/v1/enis": {"0": ds.eni_infos()}})
    return host, http, FakeEc2(), intro


def _context(host: FakeHost, http: FakeHttp, ec2: FakeEc2, intro: FakeIntrospection) -> DoctorContext:
    return DoctorContext(
        host=host,
        http=http,
        ec2_for_region=lambda region: ec2,
        introspection=intro,
        config=DoctorConfig.from_environ(host.environ()),
    )


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_healthy_node_passes_every_check() -> None:
    host, http, ec2, intro = healthy_node()
    results = doctor.run_checks(_context(host, http, ec2, intro))
    assert [r for r in results if r.status is not Status.OK] == []
    assert len(results) == len(doctor.ALL_CHECKS)
    # The IAM check used what IMDS said about the node.
    params = dict(ec2.calls)
    assert params["CreateTags"]["Resources"] == ["eni-a"]
    assert params["DescribeInstances"] == {"InstanceIds": ["i-0abc"]}
    assert "AssignPrivateIpAddresses" not in params  # EC2 has no DryRun for it
    assert params["CreateNetworkInterface"] == {"SubnetId": "subnet-1"}
    assert http.calls[1][2] == {doctor_services.TOKEN_HEADER: "tok"}


def test_cli_doctor_exits_non_zero_on_any_failure() -> None:
    host, http, ec2, intro = healthy_node()
    host.set_sysctl("net.ipv4.ip_forward", "0")
    out = io.StringIO()
    deps = CliDeps(introspection_at=lambda addr: intro, host=host, http=http, ec2_for_region=lambda r: ec2)
    assert run(["doctor"], deps=deps, out=out, err=io.StringIO()) == 1
    text = out.getvalue()
    assert "[FAIL] ip_forward" in text and "fix: sysctl -w net.ipv4.ip_forward=1" in text
    assert "1 failed" in text


def _break(mutate, check) -> CheckResult:  # type: ignore[no-untyped-def]
    host, http, ec2, intro = healthy_node()
    mutate(host, http, ec2, intro)
    return check(_context(host, http, ec2, intro))


def test_iptables_flavour_mismatch_fails_with_the_switch_command() -> None:
    def legacy_host(host, http, ec2, intro):  # type: ignore[no-untyped-def]
        host.commands[("iptables-legacy-save",)] = _ok("*filter\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n")
        host.commands[("iptables-nft-save",)] = _ok("")

    result = _break(legacy_host, doctor_host.check_iptables_mode)
    assert result.status is Status.FAIL
    assert "update-alternatives --set iptables /usr/sbin/iptables-legacy" in result.fix


def test_rules_in_both_flavours_warn() -> None:
    def both(host, http, ec2, intro):  # type: ignore[no-untyped-def]
        host.commands[("iptables-legacy-save",)] = _ok("-A INPUT -j X\n")

    assert _break(both, doctor_host.check_iptables_mode).status is Status.WARN


def test_strict_rp_filter_on_the_primary_interface_fails() -> None:
    result = _break(
        lambda h, *_: h.set_sysctl("net.ipv4.conf.ens5.rp_filter", "1"), doctor_host.check_rp_filter
    )
    assert result.status is Status.FAIL and "net.ipv4.conf.ens5.rp_filter=2" in result.fix


def test_persistent_mac_policy_warns_unless_etc_overrides() -> None:
    usr = "/usr/lib/systemd/network/99-default.link"
    etc = "/etc/systemd/network/99-default.link"

    def persistent(host, *_):  # type: ignore[no-untyped-def]
        host.files[usr] = "[Match]\nOriginalName=*\n\n[Link]\nMACAddressPolicy=persistent\n"

    result = _break(persistent, doctor_host.check_mac_policy)
    assert result.status is Status.WARN and "MACAddressPolicy=none" in result.fix

    def overridden(host, *_):  # type: ignore[no-untyped-def]
        persistent(host)
        host.files[etc] = "[Match]\nOriginalName=*\n[Link]\nMACAddressPolicy=none\n"

    assert _break(overridden, doctor_host.check_mac_policy).status is Status.OK


def test_imds_token_dropped_means_hop_limit() -> None:
    def dropped(host, http, ec2, intro):  # type: ignore[no-untyped-def]
        http.down[("PUT", f"{IMDS}/latest/api/token")] = "timed out"

    result = _break(dropped, doctor_services.check_imds)
    assert result.status is Status.FAIL and "--http-put-response-hop-limit 2" in result.fix


def test_imds_unreachable_fails() -> None:
    def gone(host, http, ec2, intro):  # type: ignore[no-untyped-def]
        http.replies.clear()

    assert _break(gone, doctor_services.check_imds).status is Status.FAIL


def test_missing_iam_permission_names_the_action() -> None:
    host, http, ec2, intro = healthy_node()
    ec2.outcomes["CreateTags"] = "denied"
    ctx = _context(host, http, ec2, intro)
    doctor_services.check_imds(ctx)
    result = doctor_services.check_ec2(ctx)
    assert result.status is Status.FAIL and "CreateTags" in result.message
    assert "iam-policy.json" in result.fix


def test_unreachable_ec2_fails() -> None:
    host, http, _, intro = healthy_node()
    ec2 = FakeEc2(
        outcomes={a: "error: Could not connect to the endpoint URL" for a in doctor_services.IAM_ACTIONS}
    )
    result = doctor_services.check_ec2(_context(host, http, ec2, intro))
    assert result.status is Status.FAIL and "unreachable" in result.message


def test_api_server_unreachable_and_unset() -> None:
    def down(host, http, ec2, intro):  # type: ignore[no-untyped-def]
        http.replies.pop(("GET", "https://api.example:443/version"))

    assert _break(down, doctor_services.check_api_server).status is Status.FAIL
    assert (
        _break(lambda h, *_: h.env.pop("CLUSTER_ENDPOINT"), doctor_services.check_api_server).status
        is Status.WARN
    )


@pytest.mark.parametrize(
    ("conflist", "needle"),
    [
        ('{"plugins":[{"type":"bridge"}]}', "not aws-cni"),
        ('{"plugins":[{"type":"aws-cni","cniSocket":"/run/other/cni.sock"}]}', "cniSocket"),
        ('{"plugins":[{"type":"aws-cni","vethPrefix":"abc"}]}', "vethPrefix"),
        ("{not json", "not a valid conflist"),
    ],
)
def test_conflist_drift_fails(conflist: str, needle: str) -> None:
    result = _break(
        lambda h, *_: h.files.update({"/etc/cni/net.d/10-aws.conflist": conflist}), doctor_host.check_conflist
    )
    assert result.status is Status.FAIL and needle in result.message


def test_conflist_shadowed_by_an_earlier_file_warns() -> None:
    result = _break(
        lambda h, *_: h.files.update({"/etc/cni/net.d/05-other.conf": "{}"}), doctor_host.check_conflist
    )
    assert result.status is Status.WARN and "05-other.conf" in result.message


def test_missing_conflist_fails() -> None:
    result = _break(lambda h, *_: h.files.pop("/etc/cni/net.d/10-aws.conflist"), doctor_host.check_conflist)
    assert result.status is Status.FAIL


def test_world_accessible_or_missing_socket_fails() -> None:
    def open_socket(host, *_):  # type: ignore[no-untyped-def]
        host.stats["/var/run/aws-node/cni.sock"] = FileInfo(mode=0o666, uid=0, gid=0, is_socket=True)

    result = _break(open_socket, doctor_host.check_sockets)
    assert result.status is Status.FAIL and "chmod 0660" in result.fix
    result = _break(lambda h, *_: h.stats.pop("/var/run/aws-node/ipamd.sock"), doctor_host.check_sockets)
    assert result.status is Status.FAIL and "missing" in result.message


def test_checkpoint_that_differs_from_the_datastore_fails() -> None:
    def stale(host, *_):  # type: ignore[no-untyped-def]
        host.files["/var/run/aws-node/ipam.json"] = encode([]).decode()

    result = _break(stale, doctor_host.check_checkpoint)
    assert result.status is Status.FAIL and "only in ipamd" in result.message


def test_corrupt_checkpoint_fails_with_recovery_step() -> None:
    result = _break(
        lambda h, *_: h.files.update({"/var/run/aws-node/ipam.json": "{"}), doctor_host.check_checkpoint
    )
    assert result.status is Status.FAIL and "move" in result.fix


def test_checkpoint_without_ipamd_warns() -> None:
    def stopped(host, http, ec2, intro):  # type: ignore[no-untyped-def]
        intro.unreachable = True

    assert _break(stopped, doctor_host.check_checkpoint).status is Status.WARN


def test_a_crashing_check_is_reported_not_raised() -> None:
    host, http, ec2, intro = healthy_node()

    def boom(ctx: DoctorContext) -> CheckResult:
        raise ValueError("bad probe")

    (result,) = doctor.run_checks(_context(host, http, ec2, intro), checks=(boom,))
    assert result.status is Status.FAIL and "bad probe" in result.message


def test_config_follows_ipamd_variables() -> None:
    """Read as ipamd reads them: VPCCNI_RUN_DIR moves the sockets, not the checkpoint."""
    cfg = DoctorConfig.from_environ(
        {"VPCCNI_RUN_DIR": "/run/x", "KUBERNETES_SERVICE_HOST": "10.100.0.1", "HOST_CNI_CONFDIR_PATH": "/c"}
    )
    assert (cfg.run_dir, cfg.checkpoint, cfg.api_server, cfg.conflist_dirs) == (
        "/run/x",
        "/var/run/aws-node/ipam.json",
        "https://10.100.0.1:443",
        ("/c",),
    )
    moved = DoctorConfig.from_environ({"AWS_VPC_K8S_CNI_BACKING_STORE": "/data/ipam.json"})
    assert moved.checkpoint == "/data/ipam.json" and moved.settings_problems == ()


def test_invalid_settings_are_a_failed_check_not_a_crash() -> None:
    host, http, ec2, intro = healthy_node()
    ctx = _context(host, http, ec2, intro)
    ctx.config = DoctorConfig.from_environ({"WARM_IP_TARGET": "lots", "VPCCNI_RUN_DIR": "/run/x"})
    assert ctx.config.run_dir == "/run/x"  # the valid ones still apply
    (result,) = doctor.run_checks(ctx, checks=(doctor.check_settings,))
    assert result.status is Status.FAIL and "WARM_IP_TARGET='lots'" in result.message


def test_ipv6_node_checks_forwarding_its_80_and_the_egress_chain() -> None:
    host, http, ec2, intro = healthy_node()
    assert check_ipv6(_context(host, http, ec2, intro)).status is Status.OK  # IPv4: nothing to check
    host.env.update({"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true"})
    result = check_ipv6(_context(host, http, ec2, intro))
    assert result.status is Status.FAIL
    assert (
        "forwarding" in result.message
        and "no IPv6 /80" in result.message
        and "AWS-EGRESS-4" in result.message
    )
    host.set_sysctl("net.ipv6.conf.all.forwarding", "1")
    host.commands[("iptables-save", "-t", "nat")] = _ok(
        '*nat\n-A POSTROUTING -s 169.254.172.0/22 -m comment --comment "AWS egress SNAT" -j AWS-EGRESS-4\n'
        "COMMIT\n"
    )
    enis = intro.docs["/v1/enis"]
    eni = next(iter(enis["0"]["ENIs"].values()))
    eni["IPv6Cidrs"] = {"2001:db8:0:100:1::/80": {}}
    result = check_ipv6(_context(host, http, ec2, intro))
    assert result.status is Status.OK, result.message
