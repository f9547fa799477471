"""Server-side tables: the real API server's columns and cells for the built-in and custom types."""

from __future__ import annotations

import datetime
import json
import urllib.request
from collections.abc import Iterator

import pytest
from vpccni.testbed.kube import CNINODES, DAEMONSETS, NODES, PODS, KubeApiServer
from vpccni.testbed.kube.handler import table_version
from vpccni.testbed.kube.tables import human_duration, json_path_column, parse_json_path, table

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "<invalid>"), (-1, "0s"), (59, "59s"), (119, "119s"), (200, "3m20s"), (240, "4m"), (900, "15m"),
     (3 * 3600 + 600, "3h10m"), (10 * 3600, "10h"), (3 * 86400 + 4 * 3600, "3d4h"), (30 * 86400, "30d"),
     (3 * 365 * 86400 + 86400, "3y1d"), (9 * 365 * 86400, "9y")],
)  # fmt: skip
def test_human_duration_as_kubernetes_prints_ages(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def _cells(columns: tuple, obj: dict) -> dict[str, object]:
    doc = table(columns, [obj], resource_version="1", now=NOW)
    return {
        c["name"]: cell for c, cell in zip(doc["columnDefinitions"], doc["rows"][0]["cells"], strict=True)
    }


def test_node_columns_including_wide() -> None:
    node = {
        "metadata": {
            "name": "n1",
            "creationTimestamp": "2026-01-02T02:59:05Z",
            "labels": {"node-role.kubernetes.io/worker": ""},
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.4"},
                {"type": "Hostname", "address": "n1"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.31.0",
                "osImage": "AL2023",
                "kernelVersion": "6.1",
                "containerRuntimeVersion": "containerd://1.7",
            },
        },
    }
    cells = _cells(NODES.columns, node)
    assert cells == {
        "Name": "n1",
        "Status": "Ready,SchedulingDisabled",
        "Roles": "worker",
        "Age": "5m",
        "Version": "v1.31.0",
        "Internal-IP": "10.0.0.4",
        "External-IP": "<none>",
        "OS-Image": "AL2023",
        "Kernel-Version": "6.1",
        "Container-Runtime": "containerd://1.7",
    }
    wide = [c.name for c in NODES.columns if c.priority]
    assert wide == ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"]


def test_pod_columns() -> None:
    pod = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-02T03:04:00Z"},
        "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.9",
            "containerStatuses": [
                {
                    "ready": True,
                    "restartCount": 2,
                    "lastState": {"terminated": {"finishedAt": "2026-01-02T03:00:05Z"}},
                },
                {"ready": False, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            ],
        },
    }
    cells = _cells(PODS.columns, pod)
    assert (cells["Ready"], cells["Status"], cells["Restarts"], cells["Age"]) == (
        "1/2",
        "CrashLoopBackOff",
        "2 (4m ago)",
        "5s",
    )
    assert (cells["IP"], cells["Node"], cells["Nominated Node"]) == ("10.0.0.9", "n1", "<none>")


def test_daemonset_columns() -> None:
    ds = {
        "metadata": {"name": "aws-node", "creationTimestamp": "2026-01-02T03:04:05Z"},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "aws-node"}},
            "template": {
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "aws-node", "image": "i:1"}],
                }
            },
        },
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2},
    }
    cells = _cells(DAEMONSETS.columns, ds)
    assert [cells[n] for n in ("Desired", "Current", "Ready", "Up-to-date", "Available")] == [3, 3, 2, 0, 0]
    assert (cells["Node Selector"], cells["Containers"], cells["Images"], cells["Selector"]) == (
        "kubernetes.io/os=linux",
        "aws-node",
        "i:1",
        "k8s-app=aws-node",
    )


def test_cninode_features_print_as_json_like_kubectl() -> None:
    cells = _cells(
        CNINODES.columns,
        {"metadata": {"name": "n1"}, "spec": {"features": [{"name": "SecurityGroupsForPods"}]}},
    )
    assert cells == {"Name": "n1", "Features": '[{"name":"SecurityGroupsForPods"}]'}
    assert _cells(CNINODES.columns, {"metadata": {"name": "n2"}, "spec": {}})["Features"] is None


def test_json_path_columns_and_their_errors() -> None:
    assert parse_json_path(".status.conditions[0].type") == ("status", "conditions", 0, "type")
    replicas = json_path_column(name="Replicas", json_path=".spec.replicas", type="integer")
    assert replicas.cell({"spec": {"replicas": 3.0}}, NOW) == 3
    since = json_path_column(name="Since", json_path=".status.at", type="date")
    assert since.cell({"status": {"at": "2026-01-02T03:00:05Z"}}, NOW) == "4m"
    for bad in ("spec.replicas", ".items[*].name", ".a[?(@.x)]", ""):
        with pytest.raises(ValueError):
            parse_json_path(bad)


def test_accept_header_negotiation() -> None:
    assert table_version(TABLE) == "meta.k8s.io/v1"
    assert (
        table_version("application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json")
        == "meta.k8s.io/v1beta1"
    )
    assert table_version("application/json") is None
    assert table_version(None) is None
    assert table_version("application/json, application/json;as=Table;v=v1;g=meta.k8s.io") is None


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer() as srv:
        yield srv


def _get(server: KubeApiServer, path: str, accept: str = TABLE) -> dict:
    request = urllib.request.Request(server.url + path, headers={"Accept": accept})
    with urllib.request.urlopen(request) as resp:
        return json.load(resp)


def test_list_get_and_include_object_over_http(server: KubeApiServer) -> None:
    server.register_node("n1", "m5.large", 29, internal_ip="10.0.0.4")
    listed = _get(server, "/api/v1/nodes")
    assert listed["kind"] == "Table" and listed["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in listed["columnDefinitions"]][:5] == [
        "Name",
        "Status",
        "Roles",
        "Age",
        "Version",
    ]
    row = listed["rows"][0]
    assert row["cells"][0] == "n1" and row["cells"][5] == "10.0.0.4"
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "n1"
    one = _get(server, "/api/v1/nodes/n1?includeObject=Object")
    assert len(one["rows"]) == 1 and one["rows"][0]["object"]["kind"] == "Node"
    assert "object" not in _get(server, "/api/v1/nodes?includeObject=None")["rows"][0]
    assert _get(server, "/api/v1/nodes", accept="application/json")["kind"] == "NodeList"
