"""A real kubectl against the testbed API server: what a new user types first.

Run with the kubectl v1.20 that scripts/bootstrap.sh installs, and again with the machine's own kubectl when
it is newer (it uses aggregated discovery, OpenAPI v3 and server-side field validation when a server has
them, and falls back as against an older server)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vpccni.testbed.k8stools import helm_template, kubectls
from vpccni.testbed.kube import CNINODES, CONFIGMAPS, DAEMONSETS, DEPLOYMENTS, ENICONFIGS, PODS, KubeApiServer

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "aws-k8s-cni.yaml"
CHART = ROOT / "deploy" / "charts" / "aws-vpc-cni"
HELPER_MANIFEST = ROOT / "deploy" / "cni-metrics-helper.yaml"
HELPER_CHART = ROOT / "deploy" / "charts" / "cni-metrics-helper"


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary, self.kubeconfig, self.home = binary, kubeconfig, home

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [
                str(self.binary),
                "--kubeconfig",
                str(self.kubeconfig),
                "--cache-dir",
                str(self.home / "cache"),
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.home)},
        )
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stderr}"
        return proc

    def table(self, *args: str) -> list[dict[str, str]]:
        """The printed table as rows keyed by header (kubectl pads columns with at least 3 spaces; a header
        such as NOMINATED NODE has one inside)."""
        lines = self.run("get", *args).stdout.splitlines()
        header = lines[0]
        starts = [0, *(m.end() for m in re.finditer(r" {2,}", header))]
        names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        return [
            {n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
            for line in lines[1:]
        ]

    def headers(self, *args: str) -> list[str]:
        return self.run("get", *args).stdout.splitlines()[0].split()


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer() as srv:
        yield srv


@pytest.fixture(params=kubectls(), ids=lambda p: f"kubectl-{p.parent.name}")
def kubectl(request: pytest.FixtureRequest, server: KubeApiServer, tmp_path: Path) -> Kubectl:
    return Kubectl(request.param, server.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path)


def _pod(name: str, node: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0}],
        },
    }


def test_get_wide_prints_the_real_columns(server: KubeApiServer, kubectl: Kubectl) -> None:
    server.register_node("ip-10-0-0-4.us-west-2.compute.internal", "m5.large", 29, internal_ip="10.0.0.4")
    server.store.create(PODS, _pod("web-1", "ip-10-0-0-4.us-west-2.compute.internal", "10.0.0.20"))
    server.store.create(
        CNINODES,
        {
            "metadata": {"name": "ip-10-0-0-4.us-west-2.compute.internal"},
            "spec": {"features": [{"name": "SecurityGroupsForPods"}]},
        },
    )
    server.store.create(ENICONFIGS, {"metadata": {"name": "us-west-2a"}, "spec": {"subnet": "subnet-1"}})

    assert kubectl.headers("nodes") == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    (node,) = kubectl.table("nodes", "-o", "wide")
    assert list(node) == [
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        "INTERNAL-IP",
        "EXTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ]
    assert (node["STATUS"], node["ROLES"], node["INTERNAL-IP"], node["EXTERNAL-IP"]) == (
        "Ready",
        "<none>",
        "10.0.0.4",
        "<none>",
    )
    assert node["VERSION"].startswith("v1.31") and node["CONTAINER-RUNTIME"].startswith("containerd://")

    (pod,) = kubectl.table("pods", "-A", "-o", "wide")
    assert list(pod)[:10] == [
        "NAMESPACE",
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ]
    assert (pod["READY"], pod["STATUS"], pod["IP"]) == ("1/1", "Running", "10.0.0.20")

    (cninode,) = kubectl.table("cninodes")
    assert cninode == {
        "NAME": "ip-10-0-0-4.us-west-2.compute.internal",
        "FEATURES": '[{"name":"SecurityGroupsForPods"}]',
    }
    (eniconfig,) = kubectl.table("eniconfigs.crd.k8s.amazonaws.com")
    assert list(eniconfig) == ["NAME", "AGE"] and eniconfig["NAME"] == "us-west-2a"
    assert [row["NAME"] for row in kubectl.table("cnd")] == ["ip-10-0-0-4.us-west-2.compute.internal"]


def _objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_apply_the_manifest_then_the_chart_then_delete(server: KubeApiServer, kubectl: Kubectl) -> None:
    applied = kubectl.run("apply", "-f", str(MANIFEST)).stdout
    assert "daemonset.apps/aws-node created" in applied
    # The ENIConfig CRD existed (EKS installs it) without kubectl's annotation: configured, as on EKS.
    assert (
        "customresourcedefinition.apiextensions.k8s.io/eniconfigs.crd.k8s.amazonaws.com configured" in applied
    )

    (ds,) = kubectl.table("ds", "-n", "kube-system", "aws-node", "-o", "wide")
    assert list(ds) == [
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "NODE SELECTOR",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert (ds["NAME"], ds["CONTAINERS"], ds["SELECTOR"]) == (
        "aws-node",
        "aws-node,aws-eks-nodeagent",
        "k8s-app=aws-node",
    )

    wanted = next(o for o in _objects(MANIFEST.read_text()) if o["kind"] == "DaemonSet")
    stored = server.store.get(DAEMONSETS, "aws-node", "kube-system")
    assert stored["spec"] == wanted["spec"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]

    again = kubectl.run("apply", "-f", str(MANIFEST)).stdout
    assert "daemonset.apps/aws-node unchanged" in again and "created" not in again

    # helm template | kubectl apply -f -: a changed value reaches the stored object through a strategic
    # merge patch, and the containers the patch does not name are untouched.
    rendered = helm_template(CHART, release="aws-vpc-cni", set_values={"env.WARM_IP_TARGET": "5"})
    assert "daemonset.apps/aws-node configured" in kubectl.run("apply", "-f", "-", stdin=rendered).stdout
    spec = server.store.get(DAEMONSETS, "aws-node", "kube-system")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["WARM_IP_TARGET"] == "5" and env["WARM_ENI_TARGET"] == "1"
    assert [c["name"] for c in spec["initContainers"]] == ["aws-vpc-cni-init"]

    assert kubectl.run("get", "configmap", "-n", "kube-system", "amazon-vpc-cni").returncode == 0
    deleted = kubectl.run("delete", "-f", str(MANIFEST)).stdout
    assert 'daemonset.apps "aws-node" deleted' in deleted
    assert server.store.list(DAEMONSETS)[0] == [] and server.store.list(CONFIGMAPS, "kube-system")[0] == []
    gone = kubectl.run("get", "ds", "-n", "kube-system", "aws-node", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_the_metrics_helper_installs_from_its_manifest_and_chart(
    server: KubeApiServer, kubectl: Kubectl
) -> None:
    assert (
        "deployment.apps/cni-metrics-helper created"
        in kubectl.run("apply", "-f", str(HELPER_MANIFEST)).stdout
    )
    (deploy,) = kubectl.table("deploy", "-n", "kube-system", "-o", "wide")
    assert list(deploy) == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert (deploy["NAME"], deploy["READY"], deploy["SELECTOR"]) == (
        "cni-metrics-helper",
        "0/1",
        "k8s-app=cni-metrics-helper",
    )
    (binding,) = kubectl.table("clusterrolebinding", "cni-metrics-helper", "-o", "wide")
    assert (binding["ROLE"], binding["SERVICEACCOUNTS"]) == (
        "ClusterRole/cni-metrics-helper",
        "kube-system/cni-metrics-helper",
    )
    rendered = helm_template(
        HELPER_CHART, release="cni-metrics-helper", set_values={"env.USE_PROMETHEUS": "true"}
    )
    assert (
        "deployment.apps/cni-metrics-helper configured"
        in kubectl.run("apply", "-f", "-", stdin=rendered).stdout
    )
    stored = server.store.get(DEPLOYMENTS, "cni-metrics-helper", "kube-system")
    env = {e["name"]: e["value"] for e in stored["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["USE_PROMETHEUS"] == "true" and env["USE_CLOUDWATCH"] == "true"
    kubectl.run("delete", "-f", str(HELPER_MANIFEST))
    assert server.store.list(DEPLOYMENTS)[0] == []


def test_validation_uses_the_servers_openapi_document(server: KubeApiServer, kubectl: Kubectl) -> None:
    ds = next(o for o in _objects(MANIFEST.read_text()) if o["kind"] == "DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    ds["spec"]["template"]["spec"]["containerz"] = []
    proc = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(ds), check=False)
    assert proc.returncode != 0
    assert "containerz" in proc.stderr and "hostNetwork" in proc.stderr
    assert server.store.list(DAEMONSETS)[0] == []
