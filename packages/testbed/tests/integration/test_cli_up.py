"""`vpccni-testbed up --no-datapath` as a subprocess (no root needed): one JSON object on stdout, EC2, IMDS
and the Kubernetes API work on loopback, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
from vpccni.awsutils.limits import max_pods, static_limits
from vpccni.testbed.cli_up import StartInterrupted, TestbedUp, UpOptions
from vpccni.testbed.cloud import CloudConfig


def port_open(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_up_prints_endpoints_and_exits_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    config = tmp_path / "testbed.json"
    config.write_text(json.dumps({"region": "eu-west-1"}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vpccni.testbed.cli",
            "up",
            "--no-datapath",
            "--nodes",
            "2",
            "--instance-type",
            "t3.small",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        for key in (
            "ec2_endpoint",
            "imds_endpoint",
            "region",
            "vpc_id",
            "subnet_ids",
            "instance_id",
            "instance_type",
        ):
            assert key in info
        assert info["region"] == "eu-west-1" and info["instance_type"] == "t3.small"
        ec2 = boto3.client(
            "ec2",
            endpoint_url=info["ec2_endpoint"],
            region_name=info["region"],
            aws_access_key_id=info["env"]["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=info["env"]["AWS_SECRET_ACCESS_KEY"],
        )
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [info["vpc_id"]]}])["Subnets"]
        assert sorted(s["SubnetId"] for s in subnets) == sorted(info["subnet_ids"])
        tagged = [s for s in subnets if {"Key": "kubernetes.io/role/cni", "Value": "1"} in s.get("Tags", [])]
        assert [s["SubnetId"] for s in tagged] == [info["subnet_ids"][1]]
        reservations = ec2.describe_instances(InstanceIds=[info["instance_id"]])["Reservations"]
        assert reservations[0]["Instances"][0]["InstanceType"] == "t3.small"
        assert port_open(info["imds_endpoint"])

        nodes = info["nodes"]
        assert len(nodes) == 2 and nodes[0]["instance_id"] == info["instance_id"]
        assert all(n["netns"] is None and n["env"]["AWS_EC2_METADATA_SERVICE_ENDPOINT"] for n in nodes)
        assert info["datapath"] is False and info["vpc_host_ip"] is None
        kube_nodes = json.loads(
            urllib.request.urlopen(f"{info['kube_api_url']}/api/v1/nodes", timeout=5).read()
        )
        registered = {n["metadata"]["name"]: n for n in kube_nodes["items"]}
        assert set(registered) == {n["k8s_node_name"] for n in nodes}
        assert {n["env"]["MY_NODE_NAME"] for n in nodes} == set(registered)
        limits = static_limits("t3.small")
        assert limits is not None
        assert {n["status"]["capacity"]["pods"] for n in registered.values()} == {str(max_pods(limits))}
        assert (
            json.loads(Path(info["kubeconfig"]).read_text())["clusters"][0]["cluster"]["server"]
            == (info["kube_api_url"])
        )

        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert "stopping the testbed" in stderr
        for url in (info["ec2_endpoint"], info["kube_api_url"], *(n["imds_endpoint"] for n in nodes)):
            assert not port_open(url)
        assert not Path(info["kubeconfig"]).parent.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_interrupted_start_tears_down_what_it_made() -> None:
    asked: list[int] = []

    def interrupted() -> bool:
        asked.append(1)
        return len(asked) > 1  # a stop signal arrives after the first node

    testbed = TestbedUp(cloud_config=CloudConfig(), options=UpOptions(nodes=3, datapath=False))
    with pytest.raises(StartInterrupted):
        testbed.start(interrupted=interrupted)
    assert len(asked) == 2
    assert testbed.workdir is not None and not testbed.workdir.exists()
    testbed.stop()  # idempotent


def test_start_and_stop_in_process_without_the_datapath() -> None:
    testbed = TestbedUp(cloud_config=CloudConfig(), options=UpOptions(nodes=1, datapath=False))
    try:
        info = testbed.start()
        assert port_open(info["ec2_endpoint"]) and port_open(info["kube_api_url"])
        assert Path(info["kubeconfig"]).is_file()
    finally:
        testbed.stop()
    assert not port_open(info["ec2_endpoint"]) and not port_open(info["kube_api_url"])
    assert not port_open(info["imds_endpoint"]) and not Path(info["kubeconfig"]).exists()


def test_a_failed_start_exits_1_with_the_reason() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vpccni.testbed.cli", "up", "--no-datapath", "--instance-type", "bogus.type"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "did not come up" in done.stderr and "pick a real type such as m5.large" in done.stderr
