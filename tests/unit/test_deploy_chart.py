"""The chart (rendered by the real helm) and the plain manifest: equal, valid, least privilege,
upstream-shaped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from vpccni.ipamd.settings import load_settings
from vpccni.ipamd.settings_registry import BY_NAME
from vpccni.testbed.k8stools import helm_template

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "charts" / "aws-vpc-cni"
MANIFEST = ROOT / "deploy" / "aws-k8s-cni.yaml"
K8S_VERSION = "1.30.0"


RELEASE = "aws-vpc-cni"


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _render(values: dict[str, Any] | None = None, *, tmp_path: Path | None = None) -> list[dict[str, Any]]:
    """``helm template`` with ``values`` as a values file (JSON is YAML)."""
    files = []
    if values:
        assert tmp_path is not None, "pass tmp_path with values"
        files.append(tmp_path / "values.yaml")
        files[0].write_text(json.dumps(values))
    return _docs(helm_template(CHART, release=RELEASE, values=files))


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def _aws_node(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = _one(docs, "DaemonSet")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "aws-node")


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_manifest_is_the_chart_rendered_with_default_values() -> None:
    assert helm_template(CHART, release=RELEASE) == MANIFEST.read_text(), (
        "deploy/aws-k8s-cni.yaml is stale: .venv/opt/k8s-tools/helm template aws-vpc-cni "
        "deploy/charts/aws-vpc-cni --namespace kube-system --include-crds > deploy/aws-k8s-cni.yaml"
    )


def test_every_object_validates_against_the_kubernetes_schemas() -> None:
    docs = _docs(MANIFEST.read_text())
    assert [d["kind"] for d in docs] == [
        "CustomResourceDefinition", "CustomResourceDefinition", "ServiceAccount", "ConfigMap", "ClusterRole",
        "ClusterRoleBinding", "DaemonSet",
    ]  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_invalid_objects_are_caught_by_the_validation_used_above() -> None:
    ds = _one(_docs(MANIFEST.read_text()), "DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_cluster_role_is_upstreams() -> None:
    rules = _one(_render(), "ClusterRole")["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    expected = (
        {("crd.k8s.amazonaws.com", "eniconfigs", v) for v in ("get", "list", "watch")}
        | {("", r, v) for r in ("namespaces", "pods", "nodes") for v in ("get", "list", "watch")}
        | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch", "list")}
        | {("vpcresources.k8s.aws", "cninodes", v) for v in ("get", "list", "watch", "patch")}
        | {("networking.k8s.aws", "policyendpoints", v) for v in ("get", "list", "watch")}
    )
    assert granted == expected
    assert not any("nonResourceURLs" in rule for rule in rules)


@pytest.mark.parametrize("flag", ["true", True])  # `--set env.ANNOTATE_POD_IP=true` gives a boolean
def test_annotate_pod_ip_adds_patch_pods_and_nothing_else(flag: object, tmp_path: Path) -> None:
    before = _one(_render(), "ClusterRole")["rules"]
    docs = _render({"env": {"ANNOTATE_POD_IP": flag}}, tmp_path=tmp_path)
    added = [r for r in _one(docs, "ClusterRole")["rules"] if r not in before]
    assert added == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    assert _env(_aws_node(docs))["ANNOTATE_POD_IP"] == "true"


def test_default_env_is_accepted_by_the_settings_and_uses_upstream_names() -> None:
    env = _env(_aws_node(_render()))
    assert set(env) <= set(BY_NAME), set(env) - set(BY_NAME)
    settings = load_settings(env)
    assert settings.warm_eni_target == 1 and settings.warm_prefix_target == 1
    assert settings.log_file == "/host/var/log/aws-routed-eni/ipamd.log"
    init = _one(_render(), "DaemonSet")["spec"]["template"]["spec"]["initContainers"][0]
    assert set(_env(init)) == {"DISABLE_TCP_EARLY_DEMUX", "ENABLE_IPv6"}
    load_settings(_env(init))


def test_daemonset_has_upstreams_shape() -> None:
    ds = _one(_render(), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["name"] == "aws-node" and ds["metadata"]["namespace"] == "kube-system"
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "10%"},
    }
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["terminationGracePeriodSeconds"] == 10
    assert pod["tolerations"] == [{"operator": "Exists"}]
    node = _aws_node([ds])
    assert node["securityContext"] == {"capabilities": {"add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]}}
    assert node["ports"] == [{"containerPort": 61678, "name": "metrics"}]
    for probe, delay in (("livenessProbe", 60), ("readinessProbe", 1)):
        assert node[probe]["timeoutSeconds"] == 10
        assert node[probe]["initialDelaySeconds"] == delay
        assert node[probe]["exec"]["command"][1] == "-addr=unix:///var/run/aws-node/ipamd.sock"
    mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    host_paths = {path: volumes[name]["path"] for path, name in mounts.items()}
    assert host_paths == {
        "/host/opt/cni/bin": "/opt/cni/bin",
        "/host/etc/cni/net.d": "/etc/cni/net.d",
        "/host/var/log/aws-routed-eni": "/var/log/aws-routed-eni",
        "/var/run/aws-node": "/var/run/aws-node",
        "/run/xtables.lock": "/run/xtables.lock",
        "/run/cni": "/run/cni",  # egress-cni's host-local store: ipamd writes it (upstream's plugin did)
    }
    assert volumes["xtables-lock"]["type"] == "FileOrCreate"
    init = pod["initContainers"][0]
    assert init["name"] == "aws-vpc-cni-init" and init["securityContext"] == {"privileged": True}
    assert init["command"] == ["/init/aws-vpc-cni-init"]


@pytest.mark.parametrize(
    ("values", "path", "expected"),
    [
        ({"image": {"override": "registry.example/aws-node:v9"}}, ("image",), "registry.example/aws-node:v9"),
        ({"image": {"tag": "1.2.3"}}, ("image",), "localhost/vpccni/aws-node:1.2.3"),
        ({"livenessProbeTimeoutSeconds": 30}, ("livenessProbe", "timeoutSeconds"), 30),
        ({"resources": {"requests": {"cpu": "50m"}}}, ("resources", "requests", "cpu"), "50m"),
    ],
)
def test_a_value_changes_its_field(
    values: dict[str, Any], path: tuple[str, ...], expected: object, tmp_path: Path
) -> None:
    node = _aws_node(_render(values, tmp_path=tmp_path))
    for key in path:
        node = node[key]
    assert node == expected


def test_env_values_merge_into_the_defaults(tmp_path: Path) -> None:
    env = _env(
        _aws_node(_render({"env": {"WARM_IP_TARGET": "5", "WARM_ENI_TARGET": "0"}}, tmp_path=tmp_path))
    )
    assert env["WARM_IP_TARGET"] == "5" and env["WARM_ENI_TARGET"] == "0"
    assert env["AWS_VPC_ENI_MTU"] == "9001"
    assert load_settings(env).warm_ip_target == 5


def test_helm_style_labels_and_irsa_annotation(tmp_path: Path) -> None:
    docs = _render(
        {
            "originalMatchLabels": False,
            "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/cni"}},
        },
        tmp_path=tmp_path,
    )
    ds = _one(docs, "DaemonSet")
    assert ds["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "aws-node",
        "app.kubernetes.io/instance": "aws-vpc-cni",
    }
    assert ds["spec"]["template"]["metadata"]["labels"]["k8s-app"] == "aws-node"
    sa = _one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/cni"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_eniconfigs_are_created_per_zone(tmp_path: Path) -> None:
    docs = _render(
        {
            "eniConfig": {
                "create": True,
                "region": "eu-west-1",
                "subnets": {"b": {"id": "subnet-b"}, "a": {"id": "subnet-a", "securityGroups": ["sg-1"]}},
            }
        },
        tmp_path=tmp_path,
    )
    enis = [d for d in docs if d["kind"] == "ENIConfig"]
    assert [(e["metadata"]["name"], e["spec"]) for e in enis] == [
        ("eu-west-1a", {"securityGroups": ["sg-1"], "subnet": "subnet-a"}),
        ("eu-west-1b", {"subnet": "subnet-b"}),
    ]


def test_set_on_the_command_line(tmp_path: Path) -> None:
    text = helm_template(CHART, release=RELEASE, set_values={"env.WARM_IP_TARGET": "7"})
    assert _env(_aws_node(_docs(text)))["WARM_IP_TARGET"] == "7"
    assert text != MANIFEST.read_text()


HELPER_CHART = ROOT / "deploy" / "charts" / "cni-metrics-helper"
HELPER_MANIFEST = ROOT / "deploy" / "cni-metrics-helper.yaml"


def test_the_metrics_helper_manifest_is_its_chart_rendered_and_valid() -> None:
    assert helm_template(HELPER_CHART, release="cni-metrics-helper") == HELPER_MANIFEST.read_text(), (
        "deploy/cni-metrics-helper.yaml is stale: .venv/opt/k8s-tools/helm template cni-metrics-helper "
        "deploy/charts/cni-metrics-helper --namespace kube-system --include-crds "
        "> deploy/cni-metrics-helper.yaml"
    )
    docs = _docs(HELPER_MANIFEST.read_text())
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_metrics_helper_has_upstreams_rbac_and_env() -> None:
    from vpccni.ipamd.metricshelper import settings

    docs = _docs(HELPER_MANIFEST.read_text())
    assert _one(docs, "ClusterRole")["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "pods/proxy"], "verbs": ["get", "watch", "list"]}
    ]
    deployment = _one(docs, "Deployment")
    assert (deployment["metadata"]["name"], deployment["metadata"]["namespace"]) == (
        "cni-metrics-helper",
        "kube-system",
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    assert env == {
        "AWS_CLUSTER_ID": "",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "INFO",
        "USE_CLOUDWATCH": "true",
        "USE_PROMETHEUS": "false",
    }
    assert set(env) <= {v.name for v in settings.HELPER_SETTINGS}
    assert settings.load(env).use_cloudwatch
    assert container["ports"] == [{"containerPort": 61681, "name": "metrics"}]


def _agent(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = _one(docs, "DaemonSet")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "aws-eks-nodeagent")


def test_network_policy_agent_container_follows_the_values(tmp_path: Path) -> None:
    from vpccni.netpol.settings import load_agent_settings

    off = _agent(_render())
    assert off["command"] == ["/app/aws-network-policy-agent"]
    assert "--enable-network-policy=false" in off["args"]
    assert off["securityContext"] == {"capabilities": {"add": ["NET_ADMIN"]}}
    assert {m["mountPath"] for m in off["volumeMounts"]} == {"/var/run/aws-node", "/var/log/aws-routed-eni"}
    values = {"enableNetworkPolicy": True, "env": {"NETWORK_POLICY_ENFORCING_MODE": "strict"}}
    on = _agent(_render(values, tmp_path=tmp_path))
    env = {**_env(on), "MY_NODE_NAME": "ip-10-0-0-4"}
    settings = load_agent_settings(on["args"], env)  # the args and env the manifest gives are valid
    assert settings.enabled and settings.mode.value == "strict" and settings.health_address == ":8163"
    assert on["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8163}
    docs = _render({"nodeAgent": {"enabled": False}}, tmp_path=tmp_path)
    containers = _one(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["aws-node"]
    assert not any("policyendpoints" in r["resources"] for r in _one(docs, "ClusterRole")["rules"])


def test_network_policy_controller_is_a_deployment_with_its_own_rbac(tmp_path: Path) -> None:
    values = {"networkPolicyController": {"enabled": True, "endpointChunkSize": 100}}
    docs = _render(values, tmp_path=tmp_path)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deployment = _one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2  # a standby: the replicas elect a leader on a Lease
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/app/vpccni-netpol-controller"]
    assert "--endpoint-chunk-size=100" in container["args"]
    assert "--enable-leader-election=true" in container["args"]
    [pod_ns] = [e for e in container["env"] if e["name"] == "POD_NAMESPACE"]
    assert pod_ns["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    [lease_role] = [d for d in docs if d["kind"] == "Role" and "leader-election" in d["metadata"]["name"]]
    lease_rules = {(r.get("resourceNames", ["*"])[0], v) for r in lease_role["rules"] for v in r["verbs"]}
    assert lease_rules == {
        ("*", "create"),
        ("amazon-network-policy-controller-k8s", "get"),
        ("amazon-network-policy-controller-k8s", "update"),
        ("amazon-network-policy-controller-k8s", "patch"),
    }
    [binding] = [d for d in docs if d["kind"] == "RoleBinding" and "leader-election" in d["metadata"]["name"]]
    assert binding["roleRef"]["name"] == lease_role["metadata"]["name"]
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and "netpol" in d["metadata"]["name"]]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}  # fmt: skip
    assert ("networking.k8s.aws", "policyendpoints", "delete") in granted
    assert ("networking.k8s.io", "networkpolicies", "watch") in granted
    assert not any(v in ("create", "delete", "patch") for g, r, v in granted if r != "policyendpoints")


def test_the_policyendpoint_crd_holds_what_the_controller_writes() -> None:
    from vpccni.netpol.policyendpoint import GROUP, PLURAL

    [crd] = [d for d in _docs(MANIFEST.read_text()) if d["metadata"]["name"] == f"{PLURAL}.{GROUP}"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(spec) == {
        "policyRef", "podSelector", "podIsolation", "podSelectorEndpoints", "ingress", "egress",
    }  # fmt: skip
    entry = spec["ingress"]["items"]["properties"]
    assert set(entry) == {"cidr", "except", "ports"}
    assert set(entry["ports"]["items"]["properties"]) == {"protocol", "port", "endPort"}
