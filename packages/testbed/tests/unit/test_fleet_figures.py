"""The fleet's figures and projection from a run's events and call log (synthetic, no processes)."""

from __future__ import annotations

from vpccni.testbed.ec2.calllog import CallRecord
from vpccni.testbed.fleet.figures import calls_per_node_by_bucket, figures, timeline
from vpccni.testbed.fleet.pacing import Pacing
from vpccni.testbed.fleet.projection import project
from vpccni.testbed.fleet.run import FleetPlan, RunData


def _call(action: str, t: float, error: str | None = None, **params: str) -> CallRecord:
    return CallRecord(action=action, params=params, error_code=error, started=t, duration=0.1)


def _run() -> RunData:
    data = RunData(pacing=Pacing.VPCCNI, plan=FleetPlan(nodes=2, pods_per_node=2), t0=100.0, t0_wall=5000.0)
    data.ready = [{"node": n, "started": 100.0, "ready": 101.0} for n in ("i-1", "i-2")]
    data.pods = [
        {"node": "i-1", "pod": "a", "first_try": 101.0, "done": 102.0, "attempts": 1, "ok": True},
        {"node": "i-1", "pod": "b", "first_try": 101.0, "done": 113.0, "attempts": 2, "ok": True},
        {"node": "i-2", "pod": "c", "first_try": 101.0, "done": 104.5, "attempts": 1, "ok": True},
        {"node": "i-2", "pod": "d", "first_try": 101.0, "done": 700.0, "attempts": 40, "ok": False},
    ]
    data.calls = [
        _call("AttachNetworkInterface", 5001.0),
        _call("AttachNetworkInterface", 5001.1, "RequestLimitExceeded"),
        _call("AttachNetworkInterface", 5002.0),
        _call("DescribeInstances", 5001.0, InstanceId_1="i-1"),
        _call("DescribeInstances", 5001.0, **{"Filter.1.Name": "instance-id"}),
    ]
    return data


def test_figures_count_what_the_issue_asks() -> None:
    figs = figures(_run())
    assert figs["fleet_nodes"] == 2 and figs["fleet_pods"] == 3
    assert figs["fleet_failed_pods"] == 1
    assert figs["fleet_time_to_all_ips_s"] is None  # a pod never got its address: no "all" time
    assert figs["fleet_throttled_calls"] == 1 and figs["throttled_by_action"] == {"AttachNetworkInterface": 1}
    assert figs["fleet_ec2_calls_per_node"]["AttachNetworkInterface"] == 1.5  # every attempt, per node
    assert figs["fleet_add_wait_p99_s"] == 12.0 and figs["failed_add_attempts"] == 40


def test_timeline_counts_pods_with_an_address_each_second() -> None:
    assert timeline(_run()) == [(0.0, 0), (1.0, 0), (2.0, 1), (3.0, 1), (4.0, 1), (5.0, 2)] + [
        (float(t), 2) for t in range(6, 13)
    ] + [(13.0, 3)]


def test_projection_takes_the_bucket_that_binds_and_leaves_throttled_calls_out() -> None:
    calls = calls_per_node_by_bucket(_run())
    assert calls == {
        "AttachNetworkInterface": 1.0,
        "DescribeInstances/unfiltered": 0.5,
        "DescribeInstances": 0.5,
    }
    big = project({"AttachNetworkInterface": 3.0, "CreateTags": 1.0}, nodes=5000, join_s=60, node_s=2)
    assert big.binding_bucket == "AttachNetworkInterface"
    assert big.bound_s == (5000 * 3 - 50) / 5 and big.time_to_all_ips_s == big.bound_s
    small = project({"AttachNetworkInterface": 3.0}, nodes=10, join_s=60, node_s=2)
    assert small.bound_s == 0 and small.time_to_all_ips_s == 62  # below the burst: the join window binds
