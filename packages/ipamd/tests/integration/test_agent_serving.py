"""The real aws-k8s-agent on a testbed node: what it serves (gRPC health, CNIBackend, ConfigServerBackend,
introspection, metrics) over the real socket and ports, settings errors, and a graceful SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2
from vpccni.ipamd.cli.introspect import IntrospectionError
from vpccni.rpc import rpc_pb2_grpc
from vpccni.testbed.cluster import Cluster, Node

if TYPE_CHECKING:
    from conftest import Agent

AGENT = Path(sys.executable).parent / "aws-k8s-agent"


def test_serves_health_backend_introspection_and_metrics(
    cluster: Cluster, node: Node, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent()

    assert agent.health() == health_pb2.HealthCheckResponse.SERVING
    assert stat.S_IMODE(os.stat(agent.socket).st_mode) == 0o660

    reply = agent.add("web-1")
    assert reply.Success
    (meta,) = reply.IPAllocationMetadata
    ip = ipaddress.IPv4Address(meta.IPv4Addr)
    assert meta.DeviceNumber == 0 and meta.RouteTableId == 254  # the primary ENI: main table
    assert list(reply.VPCv4CIDRs) == [str(cluster.cloud.config.vpc_cidr)]
    assert reply.UseExternalSNAT is False
    assert f"{ip}/32" in agent.ec2_cidrs()[node.instance.primary_eni_id]
    assert agent.add("web-1").IPAllocationMetadata[0].IPv4Addr == str(ip), "ADD is idempotent per key"

    # An upstream client of another version is refused, as upstream does.
    with pytest.raises(grpc.RpcError) as refused:
        agent.add("web-2", version="1.7.0")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == "wrong client version"

    config = rpc_pb2_grpc.ConfigServerBackendStub(agent.channel()).GetNetworkPolicyConfigs(
        empty_pb2.Empty(), timeout=5
    )
    assert config.InstanceID == node.instance.instance_id
    assert config.NodeIPv4 == str(node.instance.primary_ip)
    assert config.Region == cluster.cloud.config.region

    root = agent.introspect("/")
    assert "/v1/enis" in root["AvailableCommands"]
    enis = agent.enis()
    assert enis["AssignedIPs"] == 1
    cidr = enis["ENIs"][node.instance.primary_eni_id]["AvailableIPv4Cidrs"][f"{ip}/32"]
    addr = cidr["IPAddresses"][str(ip)]
    assert addr["IPAMMetadata"]["k8sPodName"] == "web-1"
    assert addr["IPAMKey"]["containerID"] == "", "containerID is scrubbed (upstream v1.23)"

    metrics = agent.metrics()
    assert 'awscni_ipamd_startup_duration_seconds_count{failure_reason="",success="true"' in metrics
    assert "awscni_assigned_ip_addresses 1.0" in metrics
    assert "awscni_add_ip_req_count " in metrics
    assert 'awscni_ec2api_req_count{fn="AssignPrivateIpAddresses"}' in metrics
    assert 'awscni_ipamd_action_inprogress{fn="increaseDatastorePool"}' in metrics
    assert 'awscni_ipamd_node_initialization_duration_seconds_count{success="true"} 1.0' in metrics

    released = agent.delete("web-1")
    assert released.Success and released.IPAllocationMetadata[0].IPv4Addr == str(ip)
    unknown = agent.delete("never-added")
    assert unknown.Success and not unknown.IPAllocationMetadata, "DEL of an unknown pod succeeds"


def test_sigterm_stops_gracefully_and_keeps_the_checkpoint(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    ip = agent.add_ok("db-0")

    assert agent.stop(signal.SIGTERM) == 0
    assert not agent.socket.exists(), "the gRPC socket is removed on a graceful stop"
    saved = json.loads(agent.checkpoint.read_text())
    assert saved["version"] == "vpc-cni-ipam/1"
    assert [a["ipv4"] for a in saved["allocations"]] == [str(ip)]


def test_sigterm_with_idle_clients_on_both_sockets_ends_within_the_grace_period(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent()
    with contextlib.ExitStack() as stack:
        for path in (agent.run_dir / "cni.sock", agent.socket):
            for _ in range(50):
                idle = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
                idle.connect(str(path))
        # Kubernetes kills at 30 s; the SIGKILL fallback of stop() is past that and would give None/-9.
        started = time.monotonic()
        assert agent.stop(signal.SIGTERM, timeout_s=25.0) == 0, agent.log_tail()
        print(f"SIGTERM with 100 idle clients: {time.monotonic() - started:.2f} s")


def test_grpc_refuses_callers_of_another_uid(node: Node, make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    # An operator loosened the socket and its directory (the caller starts there, so the test's private
    # temporary parents are not in its way): the uid check must still hold.
    os.chmod(agent.socket, 0o666)
    os.chmod(agent.run_dir, 0o755)
    probe = subprocess.run(
        ["ip", "netns", "exec", node.netns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-c", DEL_PROBE, agent.socket.name],
        capture_output=True, text=True, timeout=60, cwd=agent.run_dir,
    )  # fmt: skip
    assert probe.returncode == 3, (probe.stdout, probe.stderr)
    assert "UNAVAILABLE" in probe.stdout
    assert "refused: not an allowed uid" in agent.log_tail(200)


def test_stale_socket_is_replaced(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(start=False)
    agent.run_dir.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(agent.socket))
    stale.close()  # a socket file nobody listens on, as a crashed ipamd leaves it
    agent.start()
    assert agent.health() == health_pb2.HealthCheckResponse.SERVING


def test_invalid_settings_exit_1_naming_every_variable(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "WARM_IP_TARGET": "lots",
        "MAX_ENI": "x",
        "AWS_VPC_K8S_CNI_LOG_FILE": str(tmp_path / "ipamd.log"),
        "VPCCNI_RUN_DIR": str(tmp_path / "run"),
    }
    done = subprocess.run([str(AGENT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "WARM_IP_TARGET='lots'" in done.stderr
    assert "MAX_ENI='x'" in done.stderr
    assert not (tmp_path / "run" / "ipamd.sock").exists()


def test_unreachable_imds_at_start_exits_1_with_what_to_check(
    cluster: Cluster, make_agent: Callable[..., Agent]
) -> None:
    cluster.cloud.set_imds_outage(True)
    try:
        agent = make_agent(start=False)
        agent.start(wait=False)
        assert agent.proc is not None
        assert agent.proc.wait(120) == 1
    finally:
        cluster.cloud.set_imds_outage(False)
    assert "IMDS" in agent.log_tail()
    assert not agent.socket.exists(), "no socket before node init"


DEL_PROBE = """
import sys, grpc
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc
from vpccni.cniplugin.version import VERSION
req = rpc_pb2.DelNetworkRequest(ClientVersion=VERSION, K8S_POD_NAME="p", K8S_POD_NAMESPACE="default",
                                ContainerID="c", IfName="eth0", NetworkName="aws-cni", Reason="PodDeleted")
with grpc.insecure_channel("unix:" + sys.argv[1]) as ch:
    try:
        rpc_pb2_grpc.CNIBackendStub(ch).DelNetwork(req, timeout=5)
    except grpc.RpcError as err:
        print(err.code().name)
        sys.exit(3)
print("released")
"""

HEALTH_PROBE = """
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as ch:
    req = health_pb2.HealthCheckRequest(service="grpc.health.v1.aws-node")
    print(health_pb2_grpc.HealthStub(ch).Check(req, timeout=5).status)
"""


def test_optional_tcp_listener_for_old_clients(node: Node, make_agent: Callable[..., Agent]) -> None:
    make_agent(VPCCNI_GRPC_TCP_ADDRESS="127.0.0.1:50051")
    probe = subprocess.run(
        ["ip", "netns", "exec", node.netns, sys.executable, "-c", HEALTH_PROBE, "127.0.0.1:50051"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(health_pb2.HealthCheckResponse.SERVING)


def test_introspection_and_metrics_can_be_disabled(
    make_agent: Callable[..., Agent], wait_for: Callable[..., Any]
) -> None:
    agent = make_agent(start=False, DISABLE_INTROSPECTION="true", DISABLE_METRICS="true")
    agent.start(wait=False)
    wait_for(lambda: agent.socket.exists() and agent.health() == 1, what="gRPC health SERVING")
    assert agent.add_ok("p0")
    with pytest.raises(IntrospectionError):
        agent.introspect("/v1/enis")
    with pytest.raises(IntrospectionError):
        agent.metrics()
