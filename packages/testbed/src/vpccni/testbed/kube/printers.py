"""The real API server's table columns for the built-in types this testbed serves (kubectl prints them as
they come; ``pkg/printers/internalversion`` upstream). Columns of priority 1 show only with ``-o wide``."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from vpccni.testbed.kube.tables import (
    AGE,
    CREATED_AT,
    NAME,
    NONE,
    Cell,
    Column,
    age_since,
    human_duration,
    meta_of,
    parse_time,
    path_of,
)


def _field(*keys: str, default: Any = NONE) -> Cell:
    def cell(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
        value = path_of(obj, *keys)
        return default if value in (None, "") else value

    return cell


def _count(*keys: str) -> Cell:
    def cell(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
        value = path_of(obj, *keys)
        return int(value) if isinstance(value, int | float) else 0

    return cell


def _selector_text(selector: Mapping[str, Any] | None) -> str:
    """``metav1.FormatLabelSelector``: ``k=v,k2 in (a,b)`` or <none>."""
    if not selector:
        return NONE
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator", ""), expr.get("key", ""), expr.get("values") or []
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms) or NONE


def _map_text(values: Mapping[str, Any] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((values or {}).items())) or NONE


def _containers(key: str) -> Cell:
    def cell(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
        containers = path_of(obj, "spec", "template", "spec", "containers") or []
        return ",".join(str(c.get(key, "")) for c in containers) or NONE

    return cell


def _selector(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    return _selector_text(path_of(obj, "spec", "selector"))


# -- nodes ------------------------------------------------------------------------------------------


def _node_status(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    ready = "Unknown"
    for condition in path_of(obj, "status", "conditions") or []:
        if condition.get("type") == "Ready":
            ready = "Ready" if condition.get("status") == "True" else "NotReady"
    status = [ready]
    if path_of(obj, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    return ",".join(status)


def _node_roles(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    roles = set()
    for key, value in (meta_of(obj).get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/") and key != "node-role.kubernetes.io/":
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or NONE


def _node_address(kind: str) -> Cell:
    def cell(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
        for address in path_of(obj, "status", "addresses") or []:
            if address.get("type") == kind:
                return address.get("address", NONE)
        return NONE

    return cell


NODE_COLUMNS = (
    NAME,
    Column(name="Status", cell=_node_status, description="The status of the node"),
    Column(name="Roles", cell=_node_roles, description="The roles of the node"),
    AGE,
    Column(
        name="Version",
        cell=_field("status", "nodeInfo", "kubeletVersion", default=""),
        description="Kubelet Version reported by the node.",
    ),
    Column(
        name="Internal-IP",
        cell=_node_address("InternalIP"),
        priority=1,
        description="List of addresses reachable to the node.",
    ),
    Column(
        name="External-IP",
        cell=_node_address("ExternalIP"),
        priority=1,
        description="List of addresses reachable to the node.",
    ),
    Column(
        name="OS-Image",
        cell=_field("status", "nodeInfo", "osImage", default="<unknown>"),
        priority=1,
        description="OS Image reported by the node.",
    ),
    Column(
        name="Kernel-Version",
        cell=_field("status", "nodeInfo", "kernelVersion", default="<unknown>"),
        priority=1,
        description="Kernel Version reported by the node.",
    ),
    Column(
        name="Container-Runtime",
        cell=_field("status", "nodeInfo", "containerRuntimeVersion", default="<unknown>"),
        priority=1,
        description="ContainerRuntime Version reported by the node.",
    ),
)


# -- pods -------------------------------------------------------------------------------------------


def _pod_ready(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    containers = path_of(obj, "spec", "containers") or []
    statuses = path_of(obj, "status", "containerStatuses") or []
    return f"{sum(1 for s in statuses if s.get('ready'))}/{len(containers)}"


def _pod_status(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    """The printer's reason: the pod's, else a waiting or terminated container's, else the phase."""
    if meta_of(obj).get("deletionTimestamp"):
        return "Terminating"
    reason = path_of(obj, "status", "reason") or path_of(obj, "status", "phase") or "Pending"
    for status in path_of(obj, "status", "containerStatuses") or []:
        state = status.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated.get("reason"):
            reason = terminated["reason"]
    return reason


def _pod_restarts(obj: Mapping[str, Any], now: datetime.datetime) -> Any:
    restarts, last = 0, None
    for status in path_of(obj, "status", "containerStatuses") or []:
        restarts += int(status.get("restartCount") or 0)
        finished = parse_time(path_of(status, "lastState", "terminated", "finishedAt"))
        if finished is not None and (last is None or finished > last):
            last = finished
    if restarts and last is not None:
        return f"{restarts} ({human_duration((now - last).total_seconds())} ago)"
    return str(restarts)


def _pod_readiness_gates(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    gates = path_of(obj, "spec", "readinessGates") or []
    if not gates:
        return NONE
    true = {c.get("type") for c in path_of(obj, "status", "conditions") or [] if c.get("status") == "True"}
    return f"{sum(1 for g in gates if g.get('conditionType') in true)}/{len(gates)}"


POD_COLUMNS = (
    NAME,
    Column(
        name="Ready",
        cell=_pod_ready,
        description="The aggregate readiness state of this pod for accepting traffic.",
    ),
    Column(
        name="Status", cell=_pod_status, description="The aggregate status of the containers in this pod."
    ),
    Column(
        name="Restarts",
        cell=_pod_restarts,
        description="Restarts of the pod's containers, and when the last one restarted.",
    ),
    AGE,
    Column(
        name="IP", cell=_field("status", "podIP"), priority=1, description="IP address allocated to the pod."
    ),
    Column(
        name="Node",
        cell=_field("spec", "nodeName"),
        priority=1,
        description="NodeName indicates in which node this pod is scheduled.",
    ),
    Column(
        name="Nominated Node",
        cell=_field("status", "nominatedNodeName"),
        priority=1,
        description="nominatedNodeName is set only when this pod preempts other pods on the node.",
    ),
    Column(
        name="Readiness Gates",
        cell=_pod_readiness_gates,
        priority=1,
        description="If specified, all readiness gates will be evaluated for pod readiness.",
    ),
)


# -- workloads --------------------------------------------------------------------------------------

_WORKLOAD_WIDE = (
    Column(
        name="Containers",
        cell=_containers("name"),
        priority=1,
        description="Names of each container in the template.",
    ),
    Column(
        name="Images",
        cell=_containers("image"),
        priority=1,
        description="Images referenced by each container in the template.",
    ),
    Column(
        name="Selector",
        cell=_selector,
        priority=1,
        description="A label query over pods that are managed by the workload.",
    ),
)


def _node_selector(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    return _map_text(path_of(obj, "spec", "template", "spec", "nodeSelector"))


DAEMONSET_COLUMNS = (
    NAME,
    Column(
        name="Desired",
        type="integer",
        cell=_count("status", "desiredNumberScheduled"),
        description="The total number of nodes that should be running the daemon pod.",
    ),
    Column(
        name="Current",
        type="integer",
        cell=_count("status", "currentNumberScheduled"),
        description="The number of nodes that are running at least 1 daemon pod.",
    ),
    Column(
        name="Ready",
        type="integer",
        cell=_count("status", "numberReady"),
        description="Nodes with a ready daemon pod.",
    ),
    Column(
        name="Up-to-date",
        type="integer",
        cell=_count("status", "updatedNumberScheduled"),
        description="The total number of nodes that are running updated daemon pod",
    ),
    Column(
        name="Available",
        type="integer",
        cell=_count("status", "numberAvailable"),
        description="Nodes with an available daemon pod.",
    ),
    Column(
        name="Node Selector",
        cell=_node_selector,
        description="NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    *_WORKLOAD_WIDE,
)


def _deployment_ready(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    replicas = path_of(obj, "spec", "replicas")
    desired = 1 if replicas is None else int(replicas)
    return f"{int(path_of(obj, 'status', 'readyReplicas') or 0)}/{desired}"


DEPLOYMENT_COLUMNS = (
    NAME,
    Column(name="Ready", cell=_deployment_ready, description="Number of the pod with ready state"),
    Column(
        name="Up-to-date",
        type="integer",
        cell=_count("status", "updatedReplicas"),
        description="Pods of this deployment with the desired template.",
    ),
    Column(
        name="Available",
        type="integer",
        cell=_count("status", "availableReplicas"),
        description="Available pods of this deployment.",
    ),
    AGE,
    *_WORKLOAD_WIDE,
)


# -- configuration and access -----------------------------------------------------------------------


def _len_of(*keys: str) -> Cell:
    def cell(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
        return len(path_of(obj, *keys) or ())

    return cell


def _configmap_data(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


CONFIGMAP_COLUMNS = (
    NAME,
    Column(
        name="Data", type="integer", cell=_configmap_data, description="Data contains the configuration data."
    ),
    AGE,
)
SERVICEACCOUNT_COLUMNS = (
    NAME,
    Column(
        name="Secrets",
        type="integer",
        cell=_len_of("secrets"),
        description="Secrets pods running as this ServiceAccount may use.",
    ),
    AGE,
)
NAMESPACE_COLUMNS = (
    NAME,
    Column(
        name="Status",
        cell=_field("status", "phase", default="Active"),
        description="The status of the namespace",
    ),
    AGE,
)
ROLE_COLUMNS = (
    NAME,
    CREATED_AT,
)


def _role_ref(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    ref = obj.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _subjects(kind: str) -> Cell:
    def cell(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
        names = []
        for subject in obj.get("subjects") or []:
            if subject.get("kind") != kind:
                continue
            ns = subject.get("namespace")
            names.append(
                f"{ns}/{subject.get('name')}" if kind == "ServiceAccount" and ns else subject.get("name")
            )
        return ",".join(names)

    return cell


BINDING_COLUMNS = (
    NAME,
    Column(name="Role", cell=_role_ref, description="Role of the binding."),
    AGE,
    Column(name="Users", cell=_subjects("User"), priority=1, description="Users in the binding."),
    Column(name="Groups", cell=_subjects("Group"), priority=1, description="Groups in the binding."),
    Column(
        name="ServiceAccounts",
        cell=_subjects("ServiceAccount"),
        priority=1,
        description="ServiceAccounts in the binding.",
    ),
)


# -- events -----------------------------------------------------------------------------------------


def _event_last_seen(obj: Mapping[str, Any], now: datetime.datetime) -> Any:
    stamp = obj.get("lastTimestamp") or obj.get("eventTime") or meta_of(obj).get("creationTimestamp")
    return age_since(stamp, now)


def _event_object(obj: Mapping[str, Any], _now: datetime.datetime) -> Any:
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


EVENT_COLUMNS = (
    Column(name="Last Seen", cell=_event_last_seen, description="Time when last event occurred"),
    Column(name="Type", cell=_field("type", default=""), description="Type of this event"),
    Column(
        name="Reason", cell=_field("reason", default=""), description="Reason why this event was generated"
    ),
    Column(name="Object", cell=_event_object, description="The object this Event is about"),
    Column(
        name="Message",
        cell=_field("message", default=""),
        description="A human-readable description of the status of this operation.",
    ),
)
