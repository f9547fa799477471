"""The demo end to end, small: its exit status, its report, and that it leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root")


def _demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vpccni.testbed.demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _left_behind(output: str) -> list[str]:
    """Namespaces, agent processes and temp dirs named in the demo's output that still exist."""
    left = []
    run_ids = set(re.findall(r"in netns vtb-([0-9a-f]+)-node\d+", output))
    assert run_ids, "the demo names its node namespaces"
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for run_id in run_ids:
        left += [n.split()[0] for n in names.splitlines() if f"-{run_id}-" in n]
    for pid in re.findall(r"aws-k8s-agent pid (\d+)", output):
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"aws-k8s-agent" in cmdline.read_bytes():
            left.append(f"process {pid}")
    temp_dirs = re.findall(r"own interpreter\): (/\S+?)/opt-cni-bin/aws-cni", output)
    assert temp_dirs, "the demo names its work dir"
    for tmp in temp_dirs:
        if Path(tmp).exists():
            left.append(tmp)
    return left


@pytest.mark.parametrize(
    ("flag", "kinds"),
    [
        ("--ipv6", ("pod -> internet (IPv6, not translated)", "pod -> internet IPv4 (egress-cni SNAT)")),
        ("--v6-egress", ("pod -> internet (SNAT)", "pod -> internet IPv6 (egress-cni SNAT)")),
    ],
)
def test_ipv6_modes_pass_with_egress_cni_and_leave_nothing(flag: str, kinds: tuple[str, ...]) -> None:
    proc = _demo(flag, "--nodes", "2", "--pods", "6")
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "Pods (6 of 6 have an address)" in output and "FAIL " not in output
    for kind in ("pod -> pod, across nodes", "pod -> VPC host", *kinds):
        assert f"PASS  {kind}" in output, kind
    assert output.count("0 egress-cni addresses reserved") == 2
    assert _left_behind(output) == []


def test_two_nodes_six_pods_all_checks_pass_and_nothing_is_left() -> None:
    proc = _demo("--nodes", "2", "--pods", "6")
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "Pods (6 of 6 have an address)" in output
    assert "FAIL " not in output
    for kind in (
        "pod -> pod, same node",
        "pod -> pod, across nodes",
        "pod -> VPC host",
        "pod -> internet (SNAT)",
    ):
        assert f"PASS  {kind}" in output, kind
    assert "CNI_COMMAND=ADD" in output  # it says how pods are made
    assert output.count("datastore empty") == 2
    assert "AssignPrivateIpAddresses" in output
    assert _left_behind(output) == []


def test_security_groups_for_pods_allow_and_block_in_both_modes_and_nothing_is_left() -> None:
    proc = _demo("--security-groups-for-pods")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "FAIL " not in output and "all checks passed" in output
    for mode in ("strict", "standard"):
        assert f"POD_SECURITY_GROUP_ENFORCING_MODE={mode}" in output
        assert f"PASS  ADD db-{mode} on node1" in output
    assert re.search(r"db-strict\s+node1\s+\S+\s+eni-\w+\s+1\s+101\s+branch ENI", output), output
    # allowed and blocked, once per mode
    assert output.count("PASS  client (") == 2 and output.count("PASS  other (") == 2
    assert output.count("after their cool-down") == 2
    assert _left_behind(output) == []


def test_security_groups_for_pods_in_an_ipv6_cluster_allow_and_block_ipv6_flows() -> None:
    proc = _demo("--security-groups-for-pods", "--ipv6")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "FAIL " not in output and "all checks passed" in output
    # per mode: a group reference admits the client's IPv6 address, the node's group is blocked, and the VPC
    # host is blocked until an Ipv6Ranges rule admits its /128
    assert len(re.findall(r"PASS  client \(2001:db8:\S+, sg-client\) -> db \[2001:db8:", output)) == 2
    assert (
        len(re.findall(r"PASS  other \(2001:db8:\S+, the node's group\) -> .*: blocked by sg-db", output))
        == 2
    )
    host = re.findall(r"PASS  the VPC host \(\S+\) -> db \S+: (blocked|allowed) by sg-db", output)
    assert host == ["blocked", "allowed"] * 2, output
    assert output.count("IPv4 egress through egress-cni") == 2
    assert _left_behind(output) == []


def test_pods_through_aws_cni_on_a_host_without_python() -> None:
    proc = _demo("--nodes", "1", "--pods", "3", "--no-python-host")
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "holds a static busybox and nothing else (python3, C library, dynamic loader: none)" in output
    assert "Pods (3 of 3 have an address)" in output
    assert "PASS  pod -> internet (SNAT)" in output
    assert _left_behind(output) == []


@pytest.mark.skipif(shutil.which("containerd") is None, reason="containerd is not installed")
def test_pods_through_containerd_cri() -> None:
    proc = _demo("--nodes", "1", "--pods", "3", "--runtime", "containerd")
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "containerd's CRI plugin (RunPodSandbox)" in output
    assert "Pods (3 of 3 have an address)" in output
    assert "PASS  pod -> internet (SNAT)" in output
    assert output.count("datastore empty") == 1
    assert _left_behind(output) == []


def test_interrupt_while_adding_pods_cleans_up() -> None:
    proc = _demo("--nodes", "1", "--pods", "20", "--workers", "2")
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if "Pods are created" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "interrupted: tearing everything down" in output
    assert _left_behind(output) == []


@pytest.mark.parametrize(
    "runtime",
    [
        "shim",
        pytest.param(
            "containerd",
            marks=pytest.mark.skipif(
                shutil.which("containerd") is None, reason="containerd is not installed"
            ),
        ),
    ],
)
def test_multi_nic_pod_beside_ordinary_ones(runtime: str) -> None:
    proc = _demo("--multi-nic", "--nodes", "1", "--pods", "3", "--runtime", runtime)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "1 x hpc7a.12xlarge" in output and "Pods (3 of 3 have an address)" in output
    rows = re.findall(r"^PASS  node1/trainer  (\S+) +(\S+) +(\d) ", output, re.M)
    assert [(ifname, card) for ifname, _, card in rows] == [("eth0", "0"), ("mNicIf1", "1")], output
    assert "FAIL " not in output and output.count("datastore empty") == 1
    assert _left_behind(output) == []


def test_multi_nic_refuses_an_instance_type_with_one_card() -> None:
    proc = _demo("--multi-nic", "--instance-type", "m5.large")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "m5.large has one" in output and "hpc7a.12xlarge" in output
