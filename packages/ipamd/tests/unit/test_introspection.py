"""Introspection: upstream paths and JSON over loopback TCP and a Unix socket, scrubbed keys, /v1/pool."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.introspection import (
    IPAMD_ENV,
    NETWORKUTILS_ENV,
    HttpEndpoint,
    IntrospectionServer,
    IntrospectionSources,
    datastore_pod_views,
    json_response,
    pod_view,
    pool_view,
)
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.ipamd.ports import EniRecord
from vpccni.ipamd.settings import load_settings


@pytest.fixture(scope="module")
def sources() -> IntrospectionSources:
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=FakeClock())
    ds.add_eni(
        EniRecord(eni_id="eni-1", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_cidrs("eni-1", [IPv4Network("10.0.0.11/32"), IPv4Network("10.0.0.12/32")], is_prefix=False)
    ds.assign(
        IPAMKey(network_name="aws-cni", container_id="secret-id", ifname="eth0"),
        PodMetadata(namespace="default", name="web"),
    )
    settings = load_settings({"WARM_IP_TARGET": "2", "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.9.0.0/16"})
    status = PoolStatus(state=GrowthState.SUBNET_EXHAUSTED, subnet_ids=("subnet-1",), retry_after_s=10.0)
    return IntrospectionSources(
        eni_infos=lambda: {0: ds.eni_infos()},
        eni_config_name=lambda: "us-west-2a",
        networkutils_env=lambda: settings.env_view(NETWORKUTILS_ENV),
        ipamd_env=lambda: settings.env_view(IPAMD_ENV),
        pool_status=lambda: pool_view(
            snapshot=ds.snapshot(),
            status=status,
            targets=WiringPlan.from_settings(settings).pool.init,
            last_decision="assign 2 IPs to eni-1",
        ),
        pods=lambda: [
            *datastore_pod_views(ds.assigned()),
            pod_view(
                namespace="db",
                name="orders",
                ip="10.0.16.40",
                eni_id="eni-0b7",
                device_number=-1,
                route_table=107,
                assigned_ns=0,
                vlan_id=7,
                mac="0a:bb:00:00:00:07",
            ),
        ],
    )


@pytest.fixture(scope="module")
def tcp_server(sources: IntrospectionSources) -> Iterator[IntrospectionServer]:
    server = IntrospectionServer(sources=sources, bind_address="127.0.0.1:0")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(server: IntrospectionServer, path: str) -> tuple[int, Any]:
    host, port = server.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if resp.getheader("Content-Type") == "application/json" else body
    finally:
        conn.close()


def test_index_lists_upstream_paths(tcp_server: IntrospectionServer) -> None:
    status, body = get(tcp_server, "/")
    assert status == 200
    assert set(body["AvailableCommands"]) >= {
        "/v1/enis",
        "/v1/eni-configs",
        "/v1/networkutils-env-settings",
        "/v1/ipamd-env-settings",
        "/v1/pool",
    }


def test_enis_are_scrubbed(tcp_server: IntrospectionServer) -> None:
    status, body = get(tcp_server, "/v1/enis")
    assert status == 200
    card = body["0"]
    assert card["TotalIPs"] == 2 and card["AssignedIPs"] == 1
    eni = card["ENIs"]["eni-1"]
    assert eni["IsPrimary"] and eni["RouteTableID"] == 254
    addrs = eni["AvailableIPv4Cidrs"]["10.0.0.11/32"]["IPAddresses"]
    assert addrs["10.0.0.11"]["IPAMKey"] == {"networkName": "aws-cni", "containerID": "", "ifName": ""}
    assert addrs["10.0.0.11"]["IPAMMetadata"]["k8sPodName"] == "web"
    assert "secret-id" not in json.dumps(body)


def test_env_settings_and_eniconfig(tcp_server: IntrospectionServer) -> None:
    _, net = get(tcp_server, "/v1/networkutils-env-settings")
    assert set(net) == set(NETWORKUTILS_ENV)
    assert (
        net["AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS"] == "10.9.0.0/16"
        and net["AWS_VPC_K8S_CNI_CONNMARK"] == "128"
    )
    _, ipamd = get(tcp_server, "/v1/ipamd-env-settings")
    assert ipamd["WARM_IP_TARGET"] == "2" and set(ipamd) == set(IPAMD_ENV)
    assert get(tcp_server, "/v1/eni-configs") == (200, "us-west-2a")


def test_pool_view(tcp_server: IntrospectionServer) -> None:
    _, pool = get(tcp_server, "/v1/pool")
    assert pool["targets"]["WARM_IP_TARGET"] == 2
    assert (pool["totalIPs"], pool["assignedIPs"], pool["availableIPs"]) == (2, 1, 1)
    assert pool["state"] == "subnet_exhausted" and "subnet-1" in pool["reason"]
    assert pool["lastDecision"] == "assign 2 IPs to eni-1"


def test_unknown_path_is_404(tcp_server: IntrospectionServer) -> None:
    assert get(tcp_server, "/v1/nothing")[0] == 404


def test_pods_lists_every_attachment_without_container_ids(tcp_server: IntrospectionServer) -> None:
    status, pods = get(tcp_server, "/v1/pods")
    assert status == 200
    assert pods == [
        {"namespace": "default", "name": "web", "ip": "10.0.0.11", "networkCard": 0, "eniId": "eni-1",
         "deviceNumber": 0, "routeTableId": 254, "vlanId": 0, "branchEniMac": "",
         "assignedTime": pods[0]["assignedTime"]},
        {"namespace": "db", "name": "orders", "ip": "10.0.16.40", "networkCard": 0, "eniId": "eni-0b7",
         "deviceNumber": -1, "routeTableId": 107, "vlanId": 7, "branchEniMac": "0a:bb:00:00:00:07",
         "assignedTime": "0001-01-01T00:00:00Z"},
    ]  # fmt: skip
    assert "secret-id" not in json.dumps(pods) and pods[0]["assignedTime"].startswith("20")


def test_unix_socket(sources: IntrospectionSources, tmp_path: Path) -> None:
    path = tmp_path / "introspect.sock"
    path.write_text("stale")
    server = IntrospectionServer(sources=sources, bind_address=f"unix:{path}")
    server.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"GET /v1/eni-configs HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and json.loads(body) == "us-west-2a"
    finally:
        server.stop()
    assert not path.exists()


def test_busy_port_is_retried_in_the_background() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        endpoint = HttpEndpoint(
            bind_address=f"127.0.0.1:{port}", routes={"/": lambda: json_response("ok")}, retry_first_s=0.02
        )
        endpoint.start()  # does not raise: diagnostics must not stop ipamd
        assert not endpoint.serving
    try:
        for _ in range(500):
            if endpoint.serving:
                break
            threading.Event().wait(0.01)
        assert endpoint.serving
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        assert json.loads(conn.getresponse().read()) == "ok"
        conn.close()
    finally:
        endpoint.stop()
    assert not endpoint.serving
