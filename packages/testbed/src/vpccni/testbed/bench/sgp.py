"""Security groups for pods: the branch-pod ADD and the time from a pod's creation to its network.

One m5.4xlarge node (54 branch ENIs) runs the agent with ENABLE_POD_ENI=true, with the VPC resource controller
stand-in; the controller's EC2 calls get the run's latency (CreateNetworkInterface as set, and
AssociateTrunkInterface the AssignPrivateIpAddresses latency, EC2 publishing neither).

- `sgp_add_p50_ms`: ADD through the standalone shim of a branch pod whose annotation is already there (the
  controller has made and associated its branch ENI): lookup, VLAN wiring, checkpoint. ADDs of pods no
  policy selects alternate with them on the same node, for comparison under the same load.
- `sgp_pod_ready_p50_s`: one pod at a time, from creating its Pod object (through the webhook) to the shim's
  ADD returning, with the ADD started right away as kubelet does once the pod is bound: the controller's
  CreateNetworkInterface + AssociateTrunkInterface + annotation, ipamd seeing it in its pod watch, and the
  wiring. Upstream's plugin fails such an ADD until the annotation is there and kubelet retries it with a
  back-off; here ipamd waits for the annotation within VPCCNI_POD_ENI_WAIT.
- `sgp_ipv6_add_p50_ms`: the same ADD in an IPv6 cluster (a dual-stack VPC): the pod gets its branch ENI's
  IPv6 address, and the conflist's chain runs egress-cni after aws-cni (the pod's IPv4 egress), so the figure
  is the chain's, as the IPv6 pod figures are; ordinary IPv6 pods alternate with them for comparison.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from vpccni.testbed.bench.harness import percentile
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.kube import PODS
from vpccni.testbed.modes import IPV6_CLUSTER_ENV, dual_stack
from vpccni.testbed.noderunner import NodeRunner, Pod
from vpccni.testbed.vpcrc import ControllerConfig

if TYPE_CHECKING:
    from vpccni.testbed.bench.scenarios import Run

INSTANCE = "m5.4xlarge"
COOLDOWN_S = 1.0  # the controller's branch cool-down here (60 s on EKS): rounds reuse the VLANs sooner
ENV = {"ENABLE_POD_ENI": "true", "VPCCNI_POD_ENI_WAIT": "30"}


def sgp_pods(run: Run) -> None:
    rounds, per_round = (2, 10) if run.plan.quick else (5, 20)
    ready_pods = 5 if run.plan.quick else 20
    config = ClusterConfig(vpc_resource_controller=ControllerConfig(cooldown_s=COOLDOWN_S, resync_s=5))
    ready: list[float] = []
    with run.node(instance_type=INSTANCE, env=dict(ENV), cluster_config=config) as (cluster, runner):
        adds, plain_adds = _branch_adds(run, cluster, runner, rounds=rounds, per_round=per_round)
        for i in range(ready_pods):
            started = time.monotonic()
            pod = _pod_object(cluster, runner, f"ready-{i}")
            outcome = runner.add(pod)
            if outcome.ok:
                ready.append(time.monotonic() - started)
            else:
                run.notes.append(f"sgp pod-ready ADD failed: {outcome.error}")
            _delete(cluster, runner, [pod])
    run.results["sgp_add_p50_ms"] = _ms(percentile(adds, 50))
    run.results["sgp_pod_ready_p50_s"] = None if not ready else round(percentile(ready, 50) or 0, 2)
    run.extra["sgp"] = {
        "instance": INSTANCE,
        "add_samples": len(adds),
        "add_p99_ms": _ms(percentile(adds, 99)),
        "plain_pod_add_p50_ms_same_run": _ms(percentile(plain_adds, 50)),
        "ready_samples": len(ready),
        "ready_p99_s": None if not ready else round(percentile(ready, 99) or 0, 2),
        "controller": "testbed stand-in, one worker, branch cool-down 1 s",
        "AssociateTrunkInterface_latency_s": run.plan.latency.assign_ips,
    }
    run.say(
        f"security groups for pods: branch-pod ADD p50 {run.results['sgp_add_p50_ms']} ms; created -> ready "
        f"p50 {run.results['sgp_pod_ready_p50_s']} s; {run.extra['sgp']}"
    )


def sgp_ipv6_pods(run: Run) -> None:
    rounds, per_round = (2, 10) if run.plan.quick else (5, 20)
    config = ClusterConfig(
        cloud=dual_stack(), vpc_resource_controller=ControllerConfig(cooldown_s=COOLDOWN_S, resync_s=5)
    )
    env = {**ENV, **IPV6_CLUSTER_ENV}
    with run.node(instance_type=INSTANCE, env=env, cluster_config=config) as (cluster, runner):
        adds, plain_adds = _branch_adds(run, cluster, runner, rounds=rounds, per_round=per_round)
    run.results["sgp_ipv6_add_p50_ms"] = _ms(percentile(adds, 50))
    run.extra["sgp_ipv6"] = {
        "instance": INSTANCE,
        "add_samples": len(adds),
        "add_p99_ms": _ms(percentile(adds, 99)),
        "plain_ipv6_pod_add_p50_ms_same_run": _ms(percentile(plain_adds, 50)),
        "chain": "aws-cni then egress-cni (IPv4 egress), both through the standalone shim",
    }
    run.say(
        "security groups for pods, IPv6 cluster: branch-pod ADD p50 "
        f"{run.results['sgp_ipv6_add_p50_ms']} ms; {run.extra['sgp_ipv6']}"
    )


def _branch_adds(
    run: Run, cluster: Cluster, runner: NodeRunner, *, rounds: int, per_round: int
) -> tuple[list[float], list[float]]:
    """ADD times of branch pods whose annotation is there, and of pods no policy selects (the same node, the
    same moments: the comparison), alternating, in rounds that delete their pods."""
    cluster.cloud.set_latency("AssociateTrunkInterface", run.plan.latency.assign_ips)
    _policy(cluster)
    _wait(functools.partial(_has_trunk, runner), timeout_s=60, what="the node's trunk ENI")
    adds: list[float] = []
    plain_adds: list[float] = []
    for round_no in range(rounds):
        pods = [_pod_object(cluster, runner, f"sgp-{round_no}-{i}") for i in range(per_round)]
        plain = [_pod_object(cluster, runner, f"plain-{round_no}-{i}", sgp=False) for i in range(per_round)]
        for pod in pods:
            _wait(functools.partial(_annotated, cluster, pod), timeout_s=60, what=f"{pod.name} annotated")
        for pod, other in zip(pods, plain, strict=True):
            for target, samples in ((pod, adds), (other, plain_adds)):
                outcome = runner.add(target)
                if outcome.ok:
                    samples.append(outcome.elapsed_s)
                else:
                    run.notes.append(f"sgp bench ADD {target.name} failed: {outcome.error}")
        _delete(cluster, runner, pods + plain)
    return adds, plain_adds


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _policy(cluster: Cluster) -> None:
    """A group for branch pods and a SecurityGroupPolicy selecting `sgp=yes` pods in `bench`."""
    ec2 = cluster.cloud.ec2_client()
    group = ec2.create_security_group(GroupName="bench", Description="bench", VpcId=cluster.cloud.vpc_id)
    cluster.create_security_group_policy(
        "bench", namespace="bench", labels={"sgp": "yes"}, group_ids=[group["GroupId"]]
    )


def _pod_object(cluster: Cluster, runner: NodeRunner, name: str, *, sgp: bool = True) -> Pod:
    labels = {"sgp": "yes" if sgp else "no"}
    obj = cluster.create_pod(runner.node, namespace="bench", name=name, labels=labels)
    return runner.create_pod(namespace="bench", name=name, uid=obj["metadata"]["uid"])


def _annotated(cluster: Cluster, pod: Pod) -> bool:
    assert cluster.kube is not None
    obj = cluster.kube.store.get(PODS, pod.name, pod.namespace)
    return "vpc.amazonaws.com/pod-eni" in (obj["metadata"].get("annotations") or {})


def _has_trunk(runner: NodeRunner) -> bool:
    return runner.metric("vpccni_trunk_eni_attached") == 1


def _delete(cluster: Cluster, runner: NodeRunner, pods: list[Pod]) -> None:
    for pod in pods:
        runner.delete(pod)
        runner.remove_pod(pod)
        cluster.delete_pod(pod.namespace, pod.name)


def _wait(check: functools.partial[bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
