"""`vpccni-testbed up --nodes N` as a subprocess, with the datapath: node namespaces exist while it runs and
answer IMDS, EC2 and the Kubernetes API inside; SIGTERM (also mid-start) removes every namespace and file."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from vpccni.awsutils.limits import max_pods, static_limits
from vpccni.testbed.datapath import namespaces as ns

pytestmark = pytest.mark.timeout(120)

NODE_KEYS = {
    "name",
    "instance_id",
    "instance_type",
    "netns",
    "netns_path",
    "primary_ip",
    "ec2_endpoint_in_ns",
    "imds_endpoint_in_ns",
    "kube_endpoint_in_ns",
    "k8s_node_name",
    "imds_endpoint",
    "env",
}


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _port_open(url: str) -> bool:
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=1):
            return True
    except OSError:
        return False


def _imds_get(endpoint: str, path: str) -> str:
    put = urllib.request.Request(
        f"{endpoint}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    token = urllib.request.urlopen(put, timeout=5).read().decode()
    get = urllib.request.Request(
        f"{endpoint}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": token}
    )
    return str(urllib.request.urlopen(get, timeout=5).read().decode())


def _http_json(url: str) -> Any:
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


@pytest.fixture
def launch() -> Iterator[Any]:
    """Start `up` with the given flags; kill it at the end if a test left it running."""
    procs: list[subprocess.Popen[str]] = []

    def start(*flags: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vpccni.testbed.cli", "up", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the CLI's own teardown removes its namespaces
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def test_up_with_two_nodes_runs_namespaces_imds_and_kube_then_removes_everything(launch: Any) -> None:
    proc = launch("--nodes", "2", "--instance-type", "t3.small")
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())

    for key in ("ec2_endpoint", "imds_endpoint", "region", "vpc_id", "subnet_ids", "instance_id"):
        assert info[key]
    assert info["instance_type"] == "t3.small" and info["datapath"] is True
    nodes = info["nodes"]
    assert len(nodes) == 2 and all(set(node) >= NODE_KEYS for node in nodes)
    assert info["instance_id"] == nodes[0]["instance_id"] != nodes[1]["instance_id"]
    assert len({node["netns"] for node in nodes}) == 2
    assert info["vpc_host_ip"] and info["internet_ip"]

    # Each node is a namespace with eth0 on its primary IP, IMDS for its own instance, EC2 and the API.
    assert {node["netns"] for node in nodes} <= _namespaces()
    for node in nodes:
        assert Path(node["netns_path"]).exists()
        assert node["primary_ip"] in ns.exec_in_netns(node["netns"], ["ip", "-4", "addr", "show", "eth0"])
        seen = ns.in_netns(node["netns"], lambda n=node: _imds_get(n["imds_endpoint_in_ns"], "instance-id"))
        assert seen == node["instance_id"]
        assert node["env"]["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == node["imds_endpoint_in_ns"]
        in_ns = ns.in_netns(
            node["netns"], lambda n=node: _http_json(f"{n['kube_endpoint_in_ns']}/api/v1/nodes")
        )
        assert node["k8s_node_name"] in {item["metadata"]["name"] for item in in_ns["items"]}
    assert _imds_get(info["imds_endpoint"], "instance-id") == nodes[0]["instance_id"]

    # The API server answers on its loopback URL and through the kubeconfig, nodes registered as kubelet does.
    assert _http_json(f"{info['kube_api_url']}/version")
    api = k8s_client.CoreV1Api(k8s_config.new_client_from_config(config_file=info["kubeconfig"]))
    registered = {n.metadata.name: n for n in api.list_node().items}
    assert set(registered) == {node["k8s_node_name"] for node in nodes}
    limits = static_limits("t3.small")
    assert limits is not None
    assert {n.status.capacity["pods"] for n in registered.values()} == {str(max_pods(limits))}

    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert not {node["netns"] for node in nodes} & _namespaces()
    assert not any(name.startswith(f"vtb-{info['run_id']}-") for name in _namespaces())
    assert not Path(info["kubeconfig"]).parent.exists()
    for url in (info["ec2_endpoint"], info["imds_endpoint"], info["kube_api_url"]):
        assert not _port_open(url)


def test_a_stop_signal_while_starting_leaves_nothing_behind(launch: Any) -> None:
    proc = launch("--nodes", "3")
    assert proc.stderr is not None
    run_id = None
    for line in proc.stderr:
        found = re.search(r"namespaces vtb-(\w+)-\*", line)
        if found:
            run_id = found.group(1)
            break
    assert run_id is not None, "the CLI never announced its namespaces"
    # The stop signals are blocked (pending) before that line is logged and start-up asks for them before
    # its first node: it stops there, never printing the JSON.
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout == "" and "stop signal received while starting" in stderr
    assert not any(name.startswith(f"vtb-{run_id}-") for name in _namespaces())
