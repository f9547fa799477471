"""The VPC resource controller's reconcilers for security groups for pods (see the package docstring).

Reflectors watch pods, CNINodes and SecurityGroupPolicies. One worker thread reconciles the keys they queue
(a node by name, a pod by UID; a policy counts when a pod's branch ENI is made), so EC2 calls are
serial as in one controller shard; a failed key is retried with a growing delay. Deleted pods' branch ENIs
wait `cooldown_s` before deletion (upstream: 60 s, the `branch-eni-cooldown` of the `amazon-vpc-cni`
ConfigMap) so the CNI's DEL finishes before a VLAN id is reused. A periodic resync requeues everything and
hands branch ENIs nobody owns (a crash between create and annotate) to the cool-down.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from vpccni.k8sapi.names import (
    CNINODE_FEATURE_SGP,
    CNINODE_GROUP,
    CNINODE_PLURAL,
    CNINODE_VERSION,
    POD_ENI_ANNOTATION,
    POD_ENI_RESOURCE,
)
from vpccni.testbed.kube.resources import SECURITYGROUPPOLICIES as SGP
from vpccni.testbed.vpcrc.policy import groups_for
from vpccni.testbed.vpcrc.reflector import Reflector
from vpccni.testbed.vpcrc.trunks import Branch, Trunk, TrunkEc2, TrunkError

log = logging.getLogger(__name__)

HAS_TRUNK_LABEL = "vpc.amazonaws.com/has-trunk-attached"
MAX_RETRY_S = 10.0


@dataclass(frozen=True, kw_only=True)
class ControllerConfig:
    cooldown_s: float = 60.0
    resync_s: float = 10.0
    retry_s: float = 0.5  # first retry of a failed key; doubles up to MAX_RETRY_S


Key = tuple[str, str]  # ("node", name) | ("pod", uid)


class VpcResourceController:
    def __init__(self, *, kube_url: str, ec2: Any, config: ControllerConfig | None = None) -> None:
        self.config = config or ControllerConfig()
        self._ec2 = TrunkEc2(ec2)
        api = client.ApiClient(client.Configuration(host=kube_url))
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._lock = threading.Lock()  # the watched objects, shared with the reflector threads
        self._pods: dict[str, dict[str, Any]] = {}  # uid -> pod
        self._cninodes: dict[str, dict[str, Any]] = {}  # name -> CNINode
        self._policies: dict[str, dict[str, Any]] = {}  # uid -> SecurityGroupPolicy (read at branch creation)
        self._queue: queue.Queue[Key | None] = queue.Queue()
        # The worker's own state.
        self._trunks: dict[str, Trunk] = {}  # node -> its trunk
        self._branches: dict[str, Branch] = {}  # pod uid -> its branch ENI
        self._cooling: list[tuple[float, int, Branch]] = []  # (due, seq, branch)
        self._retries: list[tuple[float, int, Key]] = []
        self._failures: dict[Key, int] = {}
        self._seq = itertools.count()
        self._next_resync = 0.0
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._reflectors = [
            Reflector(name="pods", list_fn=self._core.list_pod_for_all_namespaces, on_event=self._on_pod),
            Reflector(
                name="cninodes",
                list_fn=lambda **kw: self._custom.list_cluster_custom_object(
                    CNINODE_GROUP, CNINODE_VERSION, CNINODE_PLURAL, **kw
                ),
                on_event=self._on_cninode,
            ),
            Reflector(
                name="securitygrouppolicies",
                list_fn=lambda **kw: self._custom.list_cluster_custom_object(
                    SGP.group, SGP.version, SGP.plural, **kw
                ),
                on_event=self._on_policy,
            ),
        ]

    # ---- lifecycle
    def start(self) -> VpcResourceController:
        self._worker = threading.Thread(target=self._work, name="vpcrc-worker", daemon=True)
        self._worker.start()
        for reflector in self._reflectors:
            reflector.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        for reflector in self._reflectors:
            reflector.stop()
        if self._worker is not None:
            self._worker.join(timeout=10)

    # ---- views (for tests and the demo)
    def branch_of(self, pod_uid: str) -> Branch | None:
        with self._lock:
            return self._branches.get(pod_uid)

    def trunk_of(self, node: str) -> Trunk | None:
        with self._lock:
            return self._trunks.get(node)

    def cooling_down(self) -> list[Branch]:
        with self._lock:
            return [b for _, _, b in self._cooling]

    # ---- events from the reflectors
    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(uid, None)
            else:
                self._pods[uid] = pod
        self._queue.put(("pod", uid))

    def _on_cninode(self, kind: str, cninode: dict[str, Any]) -> None:
        name = str((cninode.get("metadata") or {}).get("name") or "")
        with self._lock:
            if kind == "DELETED":
                self._cninodes.pop(name, None)
            else:
                self._cninodes[name] = cninode
        self._queue.put(("node", name))

    def _on_policy(self, kind: str, policy: dict[str, Any]) -> None:
        uid = str((policy.get("metadata") or {}).get("uid") or "")
        with self._lock:
            if kind == "DELETED":
                self._policies.pop(uid, None)
            else:
                self._policies[uid] = policy

    # ---- the worker
    def _work(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            due = (
                [self._next_resync]
                + [t for t, _, _ in self._retries[:1]]
                + [t for t, _, _ in self._cooling[:1]]
            )
            try:
                key = self._queue.get(timeout=max(0.0, min(due) - now))
            except queue.Empty:
                key = None
            if self._stopping.is_set():
                return
            self._housekeeping(time.monotonic())
            if key is not None:
                self._run(key)

    def _housekeeping(self, now: float) -> None:
        while self._retries and self._retries[0][0] <= now:
            self._run(heapq.heappop(self._retries)[2])
        while self._cooling and self._cooling[0][0] <= now:
            _, _, branch = heapq.heappop(self._cooling)
            self._delete_branch(branch)
        if now >= self._next_resync:
            self._next_resync = now + self.config.resync_s
            self._resync()

    def _run(self, key: Key) -> None:
        try:
            if key[0] == "node":
                self._reconcile_node(key[1])
            else:
                self._reconcile_pod(key[1])
            self._failures.pop(key, None)
        except Exception as exc:
            count = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(MAX_RETRY_S, self.config.retry_s * 2 ** (count - 1))
            log.warning("%s %s: %s (retry %d in %.1fs)", key[0], key[1], exc, count, delay)
            heapq.heappush(self._retries, (time.monotonic() + delay, next(self._seq), key))

    def _resync(self) -> None:
        with self._lock:
            nodes, pods = list(self._cninodes), dict(self._pods)
            owned = {b.eni_id for b in self._branches.values()} | {b.eni_id for _, _, b in self._cooling}
        for name in nodes:
            self._queue.put(("node", name))
        for uid in pods:
            self._queue.put(("pod", uid))
        for uid in [u for u in list(self._branches) if u not in pods]:
            self._release(uid)  # a DELETED event we missed
        for trunk in list(self._trunks.values()):
            for vlan, eni_id in list(trunk.vlans.items()):
                if eni_id not in owned:  # made, but its pod never got the annotation: nobody will use it
                    self._cool(
                        Branch(
                            node=trunk.node,
                            eni_id=eni_id,
                            mac="",
                            private_ip="",
                            vlan_id=vlan,
                            subnet_cidr="",
                        )
                    )

    # ---- nodes: the trunk
    def _reconcile_node(self, name: str) -> None:
        with self._lock:
            cninode = self._cninodes.get(name)
        if cninode is None:
            self._forget_node(name)
            return
        features = {f.get("name") for f in (cninode.get("spec") or {}).get("features") or []}
        if CNINODE_FEATURE_SGP not in features:
            return
        node = self._core.read_node(name, _preload_content=False)
        provider_id = str(_json(node).get("spec", {}).get("providerID", ""))
        instance_id = provider_id.rsplit("/", 1)[-1]
        if not instance_id.startswith("i-"):
            raise TrunkError(f"node {name} has no EC2 providerID ({provider_id!r})")
        known = self._trunks.get(name)
        if known is not None and known.instance_id == instance_id:
            return
        if known is not None:  # the name now belongs to another instance (an address reused)
            self._forget_node(name)
        trunk = self._ec2.trunk_for(name, instance_id)
        self._core.patch_node(name, {"metadata": {"labels": {HAS_TRUNK_LABEL: "true"}}})
        capacity = {POD_ENI_RESOURCE: str(trunk.limit)}
        self._core.patch_node_status(name, {"status": {"capacity": capacity, "allocatable": capacity}})
        with self._lock:
            self._trunks[name] = trunk
            waiting = [uid for uid, pod in self._pods.items() if _node_of(pod) == name]
        for uid in waiting:
            self._queue.put(("pod", uid))

    def _forget_node(self, name: str) -> None:
        """The node is gone: its instance took the trunk along; its branch ENIs are deleted now."""
        with self._lock:
            trunk = self._trunks.pop(name, None)
            gone = [uid for uid, b in self._branches.items() if b.node == name]
            branches = [self._branches.pop(uid) for uid in gone]
        if trunk is not None:
            for branch in branches:
                self._ec2.delete_branch(branch.eni_id)

    # ---- pods: their branch ENI
    def _reconcile_pod(self, uid: str) -> None:
        with self._lock:
            pod = self._pods.get(uid)
        if pod is None:
            self._release(uid)
            return
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        node = _node_of(pod)
        if not node or meta.get("deletionTimestamp") or not _requests_pod_eni(spec):
            return
        annotation = (meta.get("annotations") or {}).get(POD_ENI_ANNOTATION)
        trunk = self._trunks.get(node)
        if annotation:
            if uid not in self._branches and trunk is not None:  # a restart: adopt what the pod holds
                branch = Branch.from_annotation(node, annotation)
                if branch is not None:
                    with self._lock:
                        self._branches[uid] = branch
            return
        if trunk is None:
            return  # requeued when the node's trunk is attached
        branch = self._branches.get(uid)
        if branch is None:
            groups = self._groups(pod)
            if not groups:  # retried: the policy may not have reached this controller's watch yet
                raise TrunkError(
                    f"pod {meta.get('namespace')}/{meta.get('name')} asks for {POD_ENI_RESOURCE} but no "
                    "SecurityGroupPolicy selects it"
                )
            branch = self._ec2.create_branch(trunk, groups)
            with self._lock:
                self._branches[uid] = branch
            log.info(
                "pod %s/%s: branch %s VLAN %d %s",
                meta.get("namespace"),
                meta.get("name"),
                branch.eni_id,
                branch.vlan_id,
                groups,
            )
        self._core.patch_namespaced_pod(
            meta["name"],
            meta["namespace"],
            {"metadata": {"annotations": {POD_ENI_ANNOTATION: branch.annotation()}}},
        )

    def _groups(self, pod: dict[str, Any]) -> tuple[str, ...]:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        namespace = meta.get("namespace") or "default"
        with self._lock:
            policies = [p for p in self._policies.values() if p["metadata"].get("namespace") == namespace]
        sa_labels: dict[str, str] = {}
        try:
            account = self._core.read_namespaced_service_account(
                spec.get("serviceAccountName") or "default", namespace, _preload_content=False
            )
            sa_labels = (_json(account).get("metadata") or {}).get("labels") or {}
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        return groups_for(policies, pod_labels=meta.get("labels") or {}, sa_labels=sa_labels)

    def _release(self, uid: str) -> None:
        with self._lock:
            branch = self._branches.pop(uid, None)
        if branch is not None:
            self._cool(branch)

    def _cool(self, branch: Branch) -> None:
        with self._lock:
            heapq.heappush(
                self._cooling, (time.monotonic() + self.config.cooldown_s, next(self._seq), branch)
            )

    def _delete_branch(self, branch: Branch) -> None:
        try:
            self._ec2.delete_branch(branch.eni_id)
        except Exception as exc:
            log.warning("deleting branch %s: %s (retrying)", branch.eni_id, exc)
            with self._lock:
                heapq.heappush(
                    self._cooling, (time.monotonic() + self.config.retry_s, next(self._seq), branch)
                )
            return
        trunk = self._trunks.get(branch.node)
        if trunk is not None and trunk.vlans.get(branch.vlan_id) == branch.eni_id:
            del trunk.vlans[branch.vlan_id]
        log.info("branch %s (VLAN %d on %s) deleted", branch.eni_id, branch.vlan_id, branch.node)


def _node_of(pod: dict[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _requests_pod_eni(spec: dict[str, Any]) -> bool:
    return any(
        POD_ENI_RESOURCE in (((c.get("resources") or {}).get("limits")) or {})
        for c in spec.get("containers") or []
    )


def _json(response: Any) -> dict[str, Any]:
    doc = json.loads(response.data)
    return doc if isinstance(doc, dict) else {}
