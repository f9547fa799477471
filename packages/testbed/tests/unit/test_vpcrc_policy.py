"""SecurityGroupPolicy matching and the pod webhook of the VPC resource controller stand-in."""

from __future__ import annotations

from typing import Any

import pytest
from vpccni.k8sapi.names import POD_ENI_RESOURCE
from vpccni.testbed.kube import PODS, SECURITYGROUPPOLICIES, SERVICEACCOUNTS, ObjectStore
from vpccni.testbed.kube.bootstrap import bootstrap
from vpccni.testbed.vpcrc import PodEniWebhook
from vpccni.testbed.vpcrc.policy import PolicyError, groups_for, selects


def _policy(groups: list[str], **selectors: Any) -> dict[str, Any]:
    return {"spec": {**selectors, "securityGroups": {"groupIds": groups}}}


def test_pod_and_service_account_selectors_must_both_match() -> None:
    both = _policy(
        ["sg-1"],
        podSelector={"matchLabels": {"app": "db"}},
        serviceAccountSelector={"matchExpressions": [{"key": "tier", "operator": "In", "values": ["data"]}]},
    )
    assert selects(both, pod_labels={"app": "db"}, sa_labels={"tier": "data"})
    assert not selects(both, pod_labels={"app": "db"}, sa_labels={"tier": "web"})
    assert not selects(both, pod_labels={"app": "web"}, sa_labels={"tier": "data"})
    assert selects(_policy(["sg-1"], podSelector={}), pod_labels={}, sa_labels={})  # empty selects all
    assert not selects(_policy(["sg-1"]), pod_labels={"app": "db"}, sa_labels={})  # neither: nothing
    exists = _policy(["sg-1"], podSelector={"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]})
    assert selects(exists, pod_labels={}, sa_labels={}) and not selects(
        exists, pod_labels={"app": "x"}, sa_labels={}
    )
    with pytest.raises(PolicyError, match="operator"):
        selects(
            _policy(["x"], podSelector={"matchExpressions": [{"key": "a", "operator": "Like"}]}),
            pod_labels={},
            sa_labels={},
        )


def test_the_groups_are_the_union_of_every_selecting_policy() -> None:
    policies = [
        _policy(["sg-b", "sg-a"], podSelector={"matchLabels": {"app": "db"}}),
        _policy(["sg-c", "sg-a"], podSelector={}),
        _policy(["sg-z"], podSelector={"matchLabels": {"app": "web"}}),
    ]
    assert groups_for(policies, pod_labels={"app": "db"}, sa_labels={}) == ("sg-a", "sg-b", "sg-c")


def test_the_webhook_asks_for_a_branch_eni_for_selected_pods_only() -> None:
    store = ObjectStore()
    bootstrap(store)
    store.create(
        SECURITYGROUPPOLICIES,
        {
            "metadata": {"name": "db", "namespace": "prod"},
            **_policy(["sg-1"], serviceAccountSelector={"matchLabels": {"role": "db"}}),
        },
    )
    store.create(SERVICEACCOUNTS, {"metadata": {"name": "db", "namespace": "prod", "labels": {"role": "db"}}})
    hook = PodEniWebhook(store)

    def pod(account: str, *, host_network: bool = False) -> dict[str, Any]:
        return {
            "metadata": {"name": "p"},
            "spec": {
                "serviceAccountName": account,
                "hostNetwork": host_network,
                "containers": [{"name": "c"}, {"name": "d"}],
            },
        }

    selected, other, host = pod("db"), pod("default"), pod("db", host_network=True)
    for obj in (selected, other, host):
        hook(PODS, obj, "prod")
    resources = selected["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {POD_ENI_RESOURCE: "1"}, "limits": {POD_ENI_RESOURCE: "1"}}
    assert "resources" not in selected["spec"]["containers"][1]
    assert (
        "resources" not in other["spec"]["containers"][0] and "resources" not in host["spec"]["containers"][0]
    )
    other_ns = pod("db")
    hook(PODS, other_ns, "dev")  # policies are namespaced
    assert "resources" not in other_ns["spec"]["containers"][0]
