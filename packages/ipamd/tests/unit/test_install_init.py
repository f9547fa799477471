"""The init step against a fake /proc/sys, a fake sysfs and the stateful fake IMDS: never the real machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from vpccni.awsutils.imds import InstanceMetadata
from vpccni.awsutils.testing import FakeImds
from vpccni.cniplugin.testing import fake_standalone
from vpccni.ipamd.install.init import InitConfig, run_init
from vpccni.ipamd.install.sysctl import ProcSysctl
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import load_settings

PRIMARY_MAC = "0a:00:00:00:00:01"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A fake node: /proc/sys with the keys init touches, sysfs with two links, an image with plugins."""
    proc = tmp_path / "proc-sys"
    keys = ("net/ipv4/conf/ens5/rp_filter", "net/ipv4/conf/ens6/rp_filter", "net/ipv4/tcp_early_demux")
    ipv6 = ("net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/all/forwarding", "net/ipv6/conf/ens5/accept_ra")
    for key, value in (*((k, "1") for k in keys), ("net/ipv4/ip_forward", "0"), *((k, "0") for k in ipv6)):
        (proc / key).parent.mkdir(parents=True, exist_ok=True)
        (proc / key).write_text(value + "\n")
    for name, mac in (("ens5", PRIMARY_MAC), ("ens6", "0a:00:00:00:00:02")):
        (tmp_path / "net" / name).mkdir(parents=True)
        (tmp_path / "net" / name / "address").write_text(mac + "\n")
    (tmp_path / "init").mkdir()
    for name in ("loopback", "portmap", "bandwidth", "aws-vpc-cni-init"):
        (tmp_path / "init" / name).write_text(f"#!/bin/sh\n# {name}\n")
    fake_standalone(tmp_path / "app")
    return tmp_path


def _config(host: Path, env: dict[str, str]) -> InitConfig:
    env = {"HOST_CNI_BIN_PATH": str(host / "host-bin"), **env}
    return InitConfig.from_plan(
        WiringPlan.from_settings(load_settings(env)).install,
        plugins_dir=host / "init",
        app_dir=host / "app",
        sys_class_net=host / "net",
    )


def _metadata() -> InstanceMetadata:
    return InstanceMetadata(FakeImds({"mac": PRIMARY_MAC}))


def test_init_installs_plugins_and_shim_and_sets_loose_rp_filter_on_the_primary(host: Path) -> None:
    sysctl = ProcSysctl(host / "proc-sys")
    report = run_init(_config(host, {}), sysctl=sysctl, metadata=_metadata())
    assert sorted(p.name for p in (host / "host-bin").iterdir()) == [
        ".vpccni",
        "aws-cni",
        "bandwidth",
        "loopback",
        "portmap",
    ]
    assert [p.name for p in report.installed] == ["bandwidth", "loopback", "portmap", "aws-cni"]
    assert (host / "host-bin" / "aws-cni").read_text() == (host / "app" / "aws-cni").read_text()
    assert report.primary_interface == "ens5"
    assert sysctl.read("net/ipv4/conf/ens5/rp_filter") == "2"
    assert sysctl.read("net/ipv4/conf/ens6/rp_filter") == "1"  # only the primary interface
    assert sysctl.read("net/ipv4/tcp_early_demux") == "1"
    assert sysctl.read("net/ipv4/ip_forward") == "1"


def test_disable_tcp_early_demux(host: Path) -> None:
    sysctl = ProcSysctl(host / "proc-sys")
    run_init(_config(host, {"DISABLE_TCP_EARLY_DEMUX": "true"}), sysctl=sysctl, metadata=_metadata())
    assert sysctl.read("net/ipv4/tcp_early_demux") == "0"


def test_a_kernel_without_tcp_early_demux_is_left_alone(host: Path) -> None:
    (host / "proc-sys" / "net/ipv4/tcp_early_demux").unlink()
    report = run_init(_config(host, {}), sysctl=ProcSysctl(host / "proc-sys"), metadata=_metadata())
    assert [k for k, _ in report.sysctls] == ["net/ipv4/conf/ens5/rp_filter", "net/ipv4/ip_forward"]
    assert not (host / "proc-sys" / "net/ipv4/tcp_early_demux").exists()


def test_invalid_host_path_is_reported_with_the_variable(host: Path) -> None:
    with pytest.raises(ValueError, match="HOST_CNI_BIN_PATH"):
        _config(host, {"HOST_CNI_BIN_PATH": "relative/bin"})


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, {"disable_ipv6": "1", "forwarding": "0", "accept_ra": "0"}),
        (
            {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true",
             "WARM_PREFIX_TARGET": "1"},
            {"disable_ipv6": "0", "forwarding": "1", "accept_ra": "2"},
        ),
        ({"ENABLE_V6_EGRESS": "true"}, {"disable_ipv6": "1", "forwarding": "1", "accept_ra": "2"}),
    ],
    ids=["ipv4", "ipv6", "ipv4-with-v6-egress"],
)  # fmt: skip
def test_ipv6_sysctls_as_upstreams_init(host: Path, env: dict[str, str], want: dict[str, str]) -> None:
    sysctl = ProcSysctl(host / "proc-sys")
    sysctl.write("net/ipv6/conf/all/disable_ipv6", "1")
    run_init(_config(host, env), sysctl=sysctl, metadata=_metadata())
    got = {
        "disable_ipv6": sysctl.read("net/ipv6/conf/all/disable_ipv6"),
        "forwarding": sysctl.read("net/ipv6/conf/all/forwarding"),
        "accept_ra": sysctl.read("net/ipv6/conf/ens5/accept_ra"),
    }
    # Only IPv6 mode turns IPv6 on; IPv6 egress of an IPv4 node needs forwarding and RAs.
    assert got == want
