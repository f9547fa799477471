"""Which SecurityGroupPolicies select a pod, and the security groups its branch ENI gets.

As the VPC resource controller: a policy selects a pod of its namespace when its `podSelector` matches the
pod's labels and its `serviceAccountSelector` the labels of the pod's service account (both, when it has
both; a policy with neither selects nothing). The branch ENI gets the union of the groups of every policy
that selects the pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vpccni.testbed.kube.selectors import Operator, Requirement, Selector

_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.NOT_EXISTS,
}


class PolicyError(ValueError):
    """A policy the real API server's validation would refuse (the message names the field)."""


def label_selector(raw: Mapping[str, Any]) -> Selector:
    """A metav1.LabelSelector (`matchLabels` and `matchExpressions`, ANDed)."""
    requirements = [
        Requirement(key=str(key), operator=Operator.EQUALS, values=frozenset({str(value)}))
        for key, value in (raw.get("matchLabels") or {}).items()
    ]
    for expression in raw.get("matchExpressions") or []:
        operator = _OPERATORS.get(str(expression.get("operator")))
        if operator is None:
            raise PolicyError(
                f"matchExpressions operator {expression.get('operator')!r} is not one of {sorted(_OPERATORS)}"
            )
        values = frozenset(str(v) for v in expression.get("values") or [])
        requirements.append(Requirement(key=str(expression.get("key")), operator=operator, values=values))
    return Selector(requirements=tuple(requirements))


def selects(
    policy: Mapping[str, Any], *, pod_labels: Mapping[str, str], sa_labels: Mapping[str, str]
) -> bool:
    spec = policy.get("spec") or {}
    pod_selector, sa_selector = spec.get("podSelector"), spec.get("serviceAccountSelector")
    if pod_selector is None and sa_selector is None:
        return False
    if pod_selector is not None and not label_selector(pod_selector).matches(pod_labels):
        return False
    return sa_selector is None or label_selector(sa_selector).matches(sa_labels)


def groups_for(
    policies: Iterable[Mapping[str, Any]], *, pod_labels: Mapping[str, str], sa_labels: Mapping[str, str]
) -> tuple[str, ...]:
    """The sorted union of the groups of every policy that selects the pod (empty: none does)."""
    groups: set[str] = set()
    for policy in policies:
        if selects(policy, pod_labels=pod_labels, sa_labels=sa_labels):
            groups.update(
                str(g) for g in ((policy.get("spec") or {}).get("securityGroups") or {}).get("groupIds") or []
            )
    return tuple(sorted(groups))
