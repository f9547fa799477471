"""`vpccni support-bundle`: the archive layout, and that no secret ever reaches it."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile

from vpccni.ipamd.cli import bundle
from vpccni.ipamd.cli.host import CommandResult, HttpReply
from vpccni.ipamd.cli.main import CliDeps, run
from vpccni.ipamd.cli.testing import FakeEc2, FakeHost, FakeHttp, FakeIntrospection

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"


def _node() -> tuple[FakeHost, FakeHttp, FakeIntrospection]:
    host = FakeHost(
        env={
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE123",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_SESSION_TOKEN": SESSION,
            "DB_PASSWORD": "hunter2hunter2",
            "WARM_ENI_TARGET": "1",
            "AWS_VPC_K8S_CNI_LOG_FILE": "/var/log/aws-routed-eni/ipamd.log",
        }
    )
    host.files["/var/log/aws-routed-eni/ipamd.log"] = (
        '{"msg":"starting","env":"AWS_SECRET_ACCESS_KEY=' + SECRET + '"}\n{"msg":"token ' + SESSION + '"}\n'
    )
    host.files["/var/log/aws-routed-eni/plugin.log"] = '{"msg":"ADD ok"}\n'
    host.files["/var/log/aws-routed-eni/credentials"] = "[default]\naws_secret_access_key=x\n"
    host.files["/var/run/aws-node/ipam.json"] = '{"version":"vpc-cni-ipam/1","allocations":[]}'
    host.files["/etc/cni/net.d/10-aws.conflist"] = '{"name":"aws-cni"}'
    host.files["/proc/sys/net/ipv4/ip_forward"] = "1\n"
    host.files["/proc/sys/net/ipv4/conf/eth0/rp_filter"] = "2\n"
    for argv in bundle.COMMANDS.values():
        if argv[0] != "nft":
            host.commands[tuple(argv)] = CommandResult(
                returncode=0, stdout=f"output of {argv[0]}\n", stderr=""
            )
    http = FakeHttp()
    http.replies[("GET", "http://127.0.0.1:61678/metrics")] = HttpReply(
        status=200, body="awscni_eni_allocated 2\n"
    )
    intro = FakeIntrospection(
        docs={
            "/v1/enis": {"0": {"TotalIPs": 0, "AssignedIPs": 0, "ENIs": {}}},
            "/v1/pool": {"enis": 1},
            "/v1/ipamd-env-settings": {"WARM_ENI_TARGET": "1", "SOME_API_TOKEN": "abcdefgh12345"},
        }
    )
    return host, http, intro


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for member in tar.getmembers():
            f = tar.extractfile(member)
            assert f is not None
            out[member.name] = f.read()
        return out


def _archive() -> dict[str, bytes]:
    host, http, intro = _node()
    collected = bundle.collect(
        host=host, http=http, introspection=intro, config=bundle.BundleConfig.from_environ(host.environ())
    )
    buf = io.BytesIO()
    root = bundle.write_archive(collected, buf, now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert root == "vpccni-support-20260102T030405Z"
    return {name.removeprefix(root + "/"): data for name, data in _members(buf.getvalue()).items()}


def test_layout_holds_every_section_under_one_folder() -> None:
    members = _archive()
    for name in (
        "manifest.json",
        "env.txt",
        "introspection/enis.json",
        "introspection/pool.json",
        "metrics.txt",
        "commands/ip-route-all-tables.txt",
        "commands/ip-rule.txt",
        "commands/iptables-save.txt",
        "sysctls.txt",
        "files/var/log/aws-routed-eni/ipamd.log",
        "files/var/log/aws-routed-eni/plugin.log",
        "files/var/run/aws-node/ipam.json",
        "files/etc/cni/net.d/10-aws.conflist",
    ):
        assert name in members, name
    manifest = json.loads(members["manifest.json"])
    assert set(manifest["files"]) == set(members) - {"manifest.json"}
    # What could not be collected is listed with the reason, not silently skipped.
    assert manifest["not_collected"]["commands/nft-ruleset.txt"] == "nft is not installed"
    assert "introspection/eni-configs.json" in manifest["not_collected"]
    assert b"net.ipv4.conf.eth0.rp_filter = 2" in members["sysctls.txt"]
    assert b"route show table all" in members["commands/ip-route-all-tables.txt"]


def test_no_secret_reaches_the_archive() -> None:
    members = _archive()
    everything = b"".join(members.values())
    for secret in (SECRET, SESSION, "hunter2hunter2", "abcdefgh12345"):
        assert secret.encode() not in everything, secret
    env = members["env.txt"].decode()
    assert f"AWS_SECRET_ACCESS_KEY={bundle.REDACTED}" in env
    assert f"AWS_ACCESS_KEY_ID={bundle.REDACTED}" in env
    assert "WARM_ENI_TARGET=1" in env  # ordinary settings stay readable
    assert not any("credentials" in name for name in members)
    manifest = json.loads(members["manifest.json"])
    assert manifest["not_collected"]["files/var/log/aws-routed-eni/credentials"].startswith("credential file")


def test_scrub_text_keeps_ordinary_assignments() -> None:
    text = 'WARM_IP_TARGET=5 MY_TOKEN=abc "AWS_SECRET_ACCESS_KEY": "xyz" PASSWORD=p'
    out = bundle.scrub_text(text)
    assert "WARM_IP_TARGET=5" in out
    assert "abc" not in out and "xyz" not in out and "PASSWORD=p " not in out + " "


def test_credential_file_patterns() -> None:
    assert bundle.is_credential_file("/root/.aws/credentials")
    assert bundle.is_credential_file("/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert bundle.is_credential_file("/etc/kubernetes/kubeconfig")
    assert bundle.is_credential_file("/x/client.key")
    assert not bundle.is_credential_file("/var/log/aws-routed-eni/ipamd.log")


def test_cli_writes_the_archive(tmp_path) -> None:
    host, http, intro = _node()
    deps = CliDeps(introspection_at=lambda a: intro, host=host, http=http, ec2_for_region=lambda r: FakeEc2())
    out = io.StringIO()
    target = tmp_path / "b.tar.gz"
    assert run(["support-bundle", "-o", str(target)], deps=deps, out=out, err=io.StringIO()) == 0
    assert str(target) in out.getvalue()
    names = _members(target.read_bytes())
    assert any(n.endswith("/env.txt") for n in names)
