"""`vpccni-testbed up` as a subprocess: one JSON object on stdout, endpoints work, clean exit on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest


def port_open(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_prints_endpoints_and_exits_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    config = tmp_path / "testbed.json"
    config.write_text(json.dumps({"region": "eu-west-1"}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vpccni.testbed.cli",
            "up",
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
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert "stopping the testbed" in stderr
        assert not port_open(info["ec2_endpoint"]) and not port_open(info["imds_endpoint"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
