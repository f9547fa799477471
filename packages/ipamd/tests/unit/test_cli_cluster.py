"""`vpccni cluster`: one row per node from the API server (nodes, CNINodes, pods) and each aws-node's
metrics read through the API server, the cluster's totals at the bottom; a node whose aws-node does not
answer is shown as such and makes the command fail."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from vpccni.ipamd.cli.main import CliDeps, run
from vpccni.ipamd.cli.testing import FakeEc2, FakeHost, FakeHttp
from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.k8sapi.model import CniNode, CniNodeFeature, NodeInfo, PodInfo
from vpccni.k8sapi.testing import FakeCluster


def _metrics(*, enis: int, total: int, assigned: int, errors: int) -> str:
    m = IpamdMetrics(with_process_metrics=False)
    m.set_limits(max_enis=3, max_ips=27)
    m.eni_allocated.set(enis)
    m.total_ip_addresses.set(total)
    m.assigned_ip_addresses.set(assigned)
    m.ec2api_error_count.labels(fn="AttachNetworkInterface").inc(errors)
    return m.render().decode()


def _cluster() -> FakeCluster:
    fake = FakeCluster()
    fake.nodes = [
        NodeInfo(name=n, labels={"node.kubernetes.io/instance-type": "m5.large"})
        for n in ("ip-a", "ip-b", "ip-c")
    ]
    fake.cninodes = [CniNode(name="ip-a", features=(CniNodeFeature(name="SecurityGroupsForPods"),))]
    fake.pods = [
        PodInfo(
            namespace="kube-system",
            name=f"aws-node-{n}",
            uid=n,
            node_name=f"ip-{n}",
            host_network=True,
            labels={"k8s-app": "aws-node"},
        )
        for n in ("a", "b")
    ] + [PodInfo(namespace="default", name=f"web-{i}", node_name="ip-a") for i in range(3)]
    fake.serve(
        namespace="kube-system",
        pod="aws-node-a",
        port=61678,
        path="metrics",
        body=_metrics(enis=2, total=18, assigned=3, errors=1),
    )
    fake.serve(
        namespace="kube-system",
        pod="aws-node-b",
        port=61678,
        path="metrics",
        body=_metrics(enis=1, total=9, assigned=0, errors=0),
    )
    return fake


def _deps(cluster_at: Callable[[str | None], FakeCluster]) -> CliDeps:
    return CliDeps(
        introspection_at=lambda a: None,  # type: ignore[arg-type,return-value]
        host=FakeHost(env={}),
        http=FakeHttp(),
        ec2_for_region=lambda r: FakeEc2(),
        cluster_at=cluster_at,
    )


def _run(fake: FakeCluster, *argv: str) -> tuple[int, str, str]:
    deps = _deps(lambda kubeconfig: fake)
    out, err = io.StringIO(), io.StringIO()
    code = run(["cluster", *argv], deps=deps, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_one_row_per_node_and_the_totals() -> None:
    code, out, _ = _run(_cluster())
    lines = out.splitlines()
    assert lines[0].split() == [
        "NODE",
        "INSTANCE-TYPE",
        "ENIS",
        "IPS",
        "ASSIGNED",
        "PODS",
        "ERRORS",
        "FEATURES",
        "AWS-NODE",
    ]
    assert lines[1].split() == [
        "ip-a",
        "m5.large",
        "2/3",
        "18",
        "3",
        "3",
        "1",
        "SecurityGroupsForPods",
        "aws-node-a",
    ]
    assert lines[2].split() == ["ip-b", "m5.large", "1/3", "9", "0", "0", "0", "-", "aws-node-b"]
    assert lines[3].split() == ["ip-c", "m5.large", "-", "-", "-", "0", "-", "-", "missing"]
    assert lines[4].split() == ["TOTAL", "(3", "nodes)", "3/6", "27", "3", "3", "1", "-", "2/3", "answered"]
    assert code == 1  # ip-c has no aws-node


def test_json_and_a_healthy_cluster_exits_zero() -> None:
    fake = _cluster()
    fake.nodes = fake.nodes[:2]
    code, out, _ = _run(fake, "--json")
    doc = json.loads(out)
    assert code == 0
    assert [n["node"] for n in doc["nodes"]] == ["ip-a", "ip-b"]
    assert doc["total"]["ips"] == 27 and doc["total"]["pods"] == 3


def test_an_unreachable_api_server_is_an_error_that_says_so() -> None:
    fake = _cluster()
    fake.available = False
    code, _, err = _run(fake)
    assert code == 1 and "cannot read the cluster" in err


def test_a_missing_kubeconfig_says_what_to_set() -> None:
    def missing(kubeconfig: str | None) -> FakeCluster:
        raise FileNotFoundError("no Kubernetes API configuration: set CLUSTER_ENDPOINT or KUBECONFIG")

    deps = _deps(missing)
    err = io.StringIO()
    assert run(["cluster"], deps=deps, out=io.StringIO(), err=err) == 2
    assert "KUBECONFIG" in err.getvalue()
