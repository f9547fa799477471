"""Atomic installs, sysctls through a fake /proc/sys root, interface lookup by MAC, eni-max-pods.txt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vpccni.ipamd.install.files import install_dir, install_file, write_atomic
from vpccni.ipamd.install.maxpods import render_eni_max_pods
from vpccni.ipamd.install.netdev import InterfaceNotFoundError, interface_by_mac
from vpccni.ipamd.install.sysctl import ProcSysctl


def test_install_file_replaces_the_target_by_rename(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"new")
    dst_dir = tmp_path / "bin"
    dst_dir.mkdir()
    (dst_dir / "aws-cni").write_bytes(b"old")
    # A process that opened the old file keeps reading the old content: the inode was replaced, not rewritten.
    with open(dst_dir / "aws-cni", "rb") as held:
        out = install_file(src, dst_dir, name="aws-cni")
        assert held.read() == b"old"
    assert out.read_bytes() == b"new"
    assert os.stat(out).st_mode & 0o777 == 0o755
    assert sorted(p.name for p in dst_dir.iterdir()) == ["aws-cni"]


def test_install_file_names_a_missing_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rebuild"):
        install_file(tmp_path / "absent", tmp_path)


def test_install_dir_skips_excluded_and_subdirectories(tmp_path: Path) -> None:
    src = tmp_path / "init"
    (src / "sub").mkdir(parents=True)
    for name in ("loopback", "portmap", "aws-vpc-cni-init"):
        (src / name).write_text(name)
    out = install_dir(src, tmp_path / "bin", exclude=("aws-vpc-cni-init",))
    assert [p.name for p in out] == ["loopback", "portmap"]
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["loopback", "portmap"]


def test_write_atomic_creates_the_directory_and_sets_the_mode(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "net.d" / "10-aws.conflist", b"{}\n")
    assert path.read_bytes() == b"{}\n"
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_proc_sysctl_reads_and_writes_under_its_root(tmp_path: Path) -> None:
    key = tmp_path / "net" / "ipv4" / "tcp_early_demux"
    key.parent.mkdir(parents=True)
    key.write_text("1\n")
    sysctl = ProcSysctl(tmp_path)
    assert sysctl.exists("net/ipv4/tcp_early_demux")
    sysctl.write("net/ipv4/tcp_early_demux", "0")
    assert sysctl.read("net/ipv4/tcp_early_demux") == "0"
    with pytest.raises(ValueError):
        sysctl.write("net/../../etc/passwd", "x")


def test_interface_by_mac_is_case_insensitive(tmp_path: Path) -> None:
    for name, mac in (("lo", "00:00:00:00:00:00"), ("ens5", "0a:1b:2c:3d:4e:5f")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(mac + "\n")
    assert interface_by_mac("0A:1B:2C:3D:4E:5F", sys_class_net=tmp_path) == "ens5"
    with pytest.raises(InterfaceNotFoundError, match="hostNetwork"):
        interface_by_mac("0a:00:00:00:00:01", sys_class_net=tmp_path)


def test_eni_max_pods_uses_the_upstream_formula() -> None:
    lines = dict(
        line.split() for line in render_eni_max_pods().splitlines() if line and not line.startswith("#")
    )
    # m5.large: 3 ENIs x (10 - 1) + 2; t3.nano: 2 x (2 - 1) + 2 (published upstream values).
    assert lines["m5.large"] == "29"
    assert lines["t3.nano"] == "4"
    assert list(lines) == sorted(lines)
