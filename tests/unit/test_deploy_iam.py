"""The IAM policies grant exactly the EC2 actions awsutils' boto3 adapter calls."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EC2_ADAPTER = ROOT / "packages" / "awsutils" / "src" / "vpccni" / "awsutils" / "ec2api.py"
CLUSTER_TAG = "cluster.k8s.amazonaws.com/name"


def _called_actions() -> set[str]:
    # Every EC2 request goes through Boto3EC2Api._call("<Action>", ...).
    found = set(re.findall(r'_call\(\s*"([A-Za-z0-9]+)"', EC2_ADAPTER.read_text()))
    assert len(found) >= 10, "the adapter's call pattern changed: update this test"
    return {f"ec2:{a}" for a in found}


def _statements(name: str) -> list[dict[str, Any]]:
    doc = json.loads((ROOT / "deploy" / name).read_text())
    assert doc["Version"] == "2012-10-17"
    return doc["Statement"]


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_policy_grants_exactly_the_actions_the_code_calls() -> None:
    for name in ("iam-policy.json", "iam-policy-scoped.json"):
        statements = _statements(name)
        granted = set().union(*(_actions(s) for s in statements))
        assert granted == _called_actions(), name
        for s in statements:
            assert s["Effect"] == "Allow"
            assert not any("*" in a for a in _actions(s)), "no wildcard actions"


def test_only_describe_calls_have_no_resource_scope_in_the_scoped_policy() -> None:
    for s in _statements("iam-policy-scoped.json"):
        if s["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") for a in _actions(s))
            assert "Condition" not in s
        else:
            assert "Condition" in s, s["Sid"]


def test_scoped_policy_ties_enis_to_the_cluster_tag_and_the_vpc() -> None:
    statements = {s["Sid"]: s for s in _statements("iam-policy-scoped.json")}
    create = statements["CreateEnisTaggedForTheCluster"]["Condition"]["StringEquals"]
    assert create == {f"aws:RequestTag/{CLUSTER_TAG}": "${CLUSTER_NAME}"}
    lifecycle = statements["ManageTheClustersEnis"]
    assert {"ec2:DeleteNetworkInterface", "ec2:DetachNetworkInterface"} <= _actions(lifecycle)
    assert lifecycle["Condition"]["StringEquals"] == {f"aws:ResourceTag/{CLUSTER_TAG}": "${CLUSTER_NAME}"}
    vpc_scoped = [s for s in statements.values() if "ArnEquals" in s.get("Condition", {})]
    assert vpc_scoped and all(
        s["Condition"]["ArnEquals"] == {"ec2:Vpc": "arn:aws:ec2:${REGION}:${ACCOUNT_ID}:vpc/${VPC_ID}"}
        for s in vpc_scoped
    )


def test_tagging_is_limited_to_network_interfaces() -> None:
    for name in ("iam-policy.json", "iam-policy-scoped.json"):
        for s in _statements(name):
            if "ec2:CreateTags" in _actions(s):
                resources = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
                assert all(r.endswith(":network-interface/*") for r in resources)


def test_metrics_helper_policy_is_putmetricdata_in_its_namespace_and_the_tag_lookup() -> None:
    from vpccni.ipamd.metricshelper.cloudwatch import NAMESPACE

    publish, describe = _statements("iam-policy-metrics-helper.json")
    assert _actions(publish) == {"cloudwatch:PutMetricData"}
    assert publish["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}
    # The helper's only EC2 call: its instance's tags when AWS_CLUSTER_ID is unset.
    assert _actions(describe) == {"ec2:DescribeInstances"}
    assert (
        "describe_instance(" in (ROOT / "packages/ipamd/src/vpccni/ipamd/metricshelper/main.py").read_text()
    )
