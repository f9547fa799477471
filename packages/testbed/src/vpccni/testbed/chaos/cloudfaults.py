"""The cloud misbehaving under a node whose pool must grow: EC2 throttling mutating calls,
`InsufficientFreeAddressesInSubnet` (injected a few times, and a primary subnet that is really full with a
tagged second subnet free), `AttachmentLimitExceeded`, 5 s latency on every mutating call, IMDS 30 s stale
and IMDS refusing connections; and the Kubernetes API server down (with an agent restart in the middle).

Pods are added as kubelet retries a sandbox, for a budget of time each. Every address a pod got must be one
EC2 has on the node's ENIs at that moment (a stale IMDS must not lead to a bad assignment), and once the
pods are deleted the node must hold nothing.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vpccni.testbed.chaos.crash import veth_of
from vpccni.testbed.chaos.driver import PodDriver
from vpccni.testbed.chaos.ledger import PodRef, Verdict, evaluate
from vpccni.testbed.chaos.observe import Observer, settled
from vpccni.testbed.chaos.run import ChaosRun
from vpccni.testbed.cloud import CNI_ROLE_TAG, CloudConfig, SubnetSpec
from vpccni.testbed.cluster import Cluster, ClusterConfig

ISFA = "InsufficientFreeAddressesInSubnet"
# Upstream settings but a small warm target: every few pods the pool must call EC2 (and attach ENIs).
# The reconciler reads IMDS every few seconds, so that IMDS faults meet it; a short cooldown, so that the
# pods added after some went wait for the fault and not for upstream's 30 s IP cooldown.
FAULT_ENV = {
    "WARM_IP_TARGET": "2",
    "IP_COOLDOWN_PERIOD": "2",
    "VPCCNI_POOL_MONITOR_INTERVAL": "1",
    "VPCCNI_MIN_ENI_AGE": "5",
    "VPCCNI_RECONCILE_INTERVAL": "3",
}
FULL_PRIMARY = CloudConfig(
    subnets=(
        SubnetSpec(cidr=ipaddress.IPv4Network("10.0.0.0/26")),
        SubnetSpec(cidr=ipaddress.IPv4Network("10.0.16.0/20"), tags={CNI_ROLE_TAG: "1"}),
    )
)


@dataclass(frozen=True, kw_only=True)
class Fault:
    name: str
    apply: Callable[[Cluster], None]
    clear: Callable[[Cluster], None] = lambda cluster: None
    config: CloudConfig | None = None
    # How long the fault lasts (None: until the pods are done); pods added later must be served once it
    # is over, within the same budget.
    duration_s: float | None = None


def _fill_primary_subnet(cluster: Cluster) -> None:
    """Another tenant takes every free address of the node's subnet (ENIs of 50 addresses each)."""
    client = cluster.cloud.ec2_client()
    subnet = cluster.cloud.subnet_ids[0]
    while (free := client.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["AvailableIpAddressCount"]) > 0:
        client.create_network_interface(
            SubnetId=subnet, Description="another tenant", SecondaryPrivateIpAddressCount=min(free, 50) - 1
        )


def _isfa_three_times(cluster: Cluster) -> None:
    for action in ("AssignPrivateIpAddresses", "CreateNetworkInterface"):
        cluster.cloud.inject_error(action, ISFA, 3)


def _mutation_latency(cluster: Cluster, seconds: float) -> None:
    for action in (
        "AssignPrivateIpAddresses",
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "CreateTags",
    ):
        cluster.cloud.set_latency(action, seconds)


def faults(*, imds_stale_s: float) -> tuple[Fault, ...]:
    return (
        Fault(
            name="mutating calls throttled (3 burst, 0.5/s)",
            apply=lambda c: c.cloud.set_throttle("mutating", capacity=3, refill_per_s=0.5),
            clear=lambda c: c.cloud.disable_throttle("mutating"),
        ),
        Fault(
            name=f"{ISFA} 3 times (transient)",
            apply=_isfa_three_times,
        ),
        Fault(
            name=f"{ISFA} for good (the primary subnet is full)",
            apply=_fill_primary_subnet,
            config=FULL_PRIMARY,
        ),
        Fault(
            name="AttachmentLimitExceeded 2 times",
            apply=lambda c: c.cloud.inject_error("AttachNetworkInterface", "AttachmentLimitExceeded", 2),
        ),
        Fault(
            name="5 s latency on every mutating call for 30 s",
            apply=lambda c: _mutation_latency(c, 5.0),
            clear=lambda c: _mutation_latency(c, 0.0),
            duration_s=30.0,
        ),
        Fault(
            name=f"IMDS {imds_stale_s:g} s stale for {imds_stale_s * 2:g} s",
            apply=lambda c: c.cloud.set_imds_lag(imds_stale_s),
            clear=lambda c: c.cloud.set_imds_lag(0),
            duration_s=imds_stale_s * 2,
        ),
        Fault(
            name=f"IMDS refusing connections for {imds_stale_s:g} s",
            apply=lambda c: c.cloud.set_imds_outage(True),
            clear=lambda c: c.cloud.set_imds_outage(False),
            duration_s=imds_stale_s,
        ),
    )


@dataclass(kw_only=True)
class FaultResult:
    name: str
    pods: int
    served: int = 0
    max_add_s: float = 0.0
    attempts: int = 0
    bad_assignments: list[str] = field(default_factory=list)
    ec2_errors: dict[str, int] = field(default_factory=dict)
    mutating_calls: int = 0
    findings: list[str] = field(default_factory=list)


def _owned_by_node(observer: Observer, ip: ipaddress.IPv4Address) -> bool:
    attached, _ = observer.ec2()
    return any(ip in net for net in attached)


def _add_pods(
    driver: PodDriver, observer: Observer, result: FaultResult, *, count: int, budget_s: float
) -> list[PodRef]:
    """`count` pods at once, each retried until `budget_s` runs out; each address checked against EC2."""

    def one(_: int) -> tuple[PodRef | None, float, int]:
        return driver.add_until(driver.new_name(), deadline=time.monotonic() + budget_s, backoff_s=1.0)

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        outcomes = list(pool.map(one, range(count)))
    refs = []
    live = driver.live()
    for ref, seconds, attempts in outcomes:
        result.attempts += attempts
        if ref is None:
            continue
        refs.append(ref)
        result.served += 1
        result.max_add_s = max(result.max_add_s, seconds)
        if not _owned_by_node(observer, live[ref]):
            result.bad_assignments.append(f"{ref.label} got {live[ref]}, which EC2 has not on the node")
    return refs


def _leaks_after_delete(observer: Observer, driver: PodDriver) -> Verdict:
    driver.delete_all()

    def once() -> Verdict:
        view = observer.view()
        return evaluate(live={}, pending=driver.pending(view.queued_dels), view=view, veth_name=veth_of)

    return settled(once)


def _ec2_tally(cluster: Cluster, since: float, result: FaultResult) -> None:
    for record in cluster.cloud.call_log:
        if record.started < since:
            continue
        if record.error_code:
            result.ec2_errors[record.error_code] = result.ec2_errors.get(record.error_code, 0) + 1
        if record.action.startswith(("Create", "Attach", "Assign", "Unassign", "Detach", "Delete", "Modify")):
            result.mutating_calls += 1


def _one_fault(run: ChaosRun, fault: Fault) -> FaultResult:
    plan = run.plan
    result = FaultResult(name=fault.name, pods=plan.fault_pods + plan.fault_pods // 2)
    config = ClusterConfig(cloud=fault.config) if fault.config else None
    with run.node(env=FAULT_ENV, config=config, scenario="cloud faults") as (cluster, runner, _):
        observer = Observer(cluster=cluster, runner=runner)
        driver = PodDriver(runner, namespace="faults", prefix="f")
        since = time.time()
        fault.apply(cluster)
        ended = threading.Timer(fault.duration_s or 0.0, fault.clear, args=(cluster,))
        if fault.duration_s is not None:
            ended.start()
        try:
            _add_pods(driver, observer, result, count=plan.fault_pods, budget_s=plan.fault_budget_s)
            # The pool goes on: pods go, the pool shrinks, the reconciler reads IMDS, more pods come.
            for ref in list(driver.live())[: plan.fault_pods // 2]:
                driver.delete(ref)
            time.sleep(max(0.0, (fault.duration_s or 0.0) / 2 - (time.time() - since)))
            _add_pods(driver, observer, result, count=plan.fault_pods // 2, budget_s=plan.fault_budget_s)
        finally:
            ended.cancel()
            fault.clear(cluster)
        _ec2_tally(cluster, since, result)
        result.bad_assignments += _still_owned(observer, driver)
        result.findings = [str(f) for f in _leaks_after_delete(observer, driver).findings]
    return result


def _still_owned(observer: Observer, driver: PodDriver) -> list[str]:
    """Once IMDS caught up: every live pod's address is still the node's in EC2."""
    attached, _ = observer.ec2()
    return [f"{ref.label} holds {ip}, gone from the node in EC2" for ref, ip in driver.live().items()
            if not any(ip in net for net in attached)]  # fmt: skip


def _apiserver_down(run: ChaosRun) -> dict[str, Any]:
    """The API server answers 503 for `apiserver_down_s`; pods are added all along, and the agent is
    restarted in the middle of it."""
    plan = run.plan
    with run.node(env=FAULT_ENV, scenario="api server down") as (cluster, runner, life):
        assert cluster.kube is not None
        observer = Observer(cluster=cluster, runner=runner)
        driver = PodDriver(runner, namespace="apidown", prefix="a")
        cluster.kube.set_available(False)
        started = time.monotonic()
        served = attempted = 0
        restarted_s = None
        try:
            while time.monotonic() - started < plan.apiserver_down_s:
                if restarted_s is None and time.monotonic() - started > plan.apiserver_down_s / 3:
                    life.kill()
                    restarted_s = life.start(timeout_s=plan.apiserver_down_s * 2)
                attempted += 1
                ref, _, _ = driver.add_until(driver.new_name(), deadline=started + plan.apiserver_down_s)
                served += ref is not None
                time.sleep(min(2.0, plan.apiserver_down_s / max(1, plan.fault_pods)))
        finally:
            cluster.kube.set_available(True)
        findings = [str(f) for f in _leaks_after_delete(observer, driver).findings]
    return {
        "attempted": attempted,
        "served": served,
        "down_s": plan.apiserver_down_s,
        "restart_during_outage_s": round(restarted_s, 2) if restarted_s is not None else None,
        "findings": findings,
    }


def cloud_faults(run: ChaosRun) -> None:
    results = []
    for fault in faults(imds_stale_s=run.plan.imds_stale_s):
        result = _one_fault(run, fault)
        results.append(result)
        run.say(
            f"  {fault.name}: {result.served}/{result.pods} pods served, slowest {result.max_add_s:.1f} s, "
            f"EC2 errors {result.ec2_errors}"
            + (f", FINDINGS {result.findings[:3]}" if result.findings else "")
        )
    api = _apiserver_down(run)
    run.say(f"  API server down {api['down_s']:.0f} s: {api['served']}/{api['attempted']} pods served")
    for r in results:
        run.findings += [f"{r.name}: {f}" for f in r.bad_assignments + r.findings]
    run.findings += [f"API server down: {f}" for f in api["findings"]]
    pods = sum(r.pods for r in results)
    run.results.update(
        {
            "ec2_fault_pods_served_pct": round(100 * sum(r.served for r in results) / pods, 1)
            if pods
            else None,
            "imds_stale_bad_assignments": sum(len(r.bad_assignments) for r in results),
            "ec2_fault_max_add_s": round(max((r.max_add_s for r in results if r.served), default=0.0), 2),
            "ec2_fault_leaks": sum(len(r.findings) for r in results) + len(api["findings"]),
            "apiserver_down_pods_served": api["served"],
        }
    )
    run.detail["cloud_faults"] = {
        "budget_s": run.plan.fault_budget_s,
        "settings": FAULT_ENV,
        "faults": [
            {
                "fault": r.name,
                "served": f"{r.served}/{r.pods}",
                "slowest_add_s": round(r.max_add_s, 2),
                "add_attempts": r.attempts,
                "ec2_mutating_calls": r.mutating_calls,
                "ec2_errors": r.ec2_errors,
                "bad_assignments": r.bad_assignments[:5],
                "findings": r.findings[:5],
            }
            for r in results
        ],
        "apiserver_down": api,
    }
