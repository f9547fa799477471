"""A small fleet end to end: worker processes run the product's agents against the account's EC2."""

from __future__ import annotations

from vpccni.testbed.bench.harness import Latency
from vpccni.testbed.fleet.figures import figures
from vpccni.testbed.fleet.pacing import Pacing
from vpccni.testbed.fleet.run import FleetPlan, run_fleet


def test_a_small_fleet_gives_every_pod_an_address_under_both_pacings() -> None:
    plan = FleetPlan(
        nodes=3, pods_per_node=20, join_s=1.0, workers=1, settle_s=0.5, latency=Latency(imds_lag=0.2)
    )
    for pacing in Pacing:
        data = run_fleet(plan, pacing)
        figs = figures(data)
        assert (figs["fleet_nodes"], figs["fleet_pods"], figs["fleet_failed_pods"]) == (3, 60, 0), figs
        per_node = figs["fleet_ec2_calls_per_node"]
        # m5.xlarge holds 14 pod addresses per ENI: 20 pods need the primary's and one more ENI, each node.
        assert per_node["CreateNetworkInterface"] >= 1 and per_node["AttachNetworkInterface"] >= 1
        assert [m["phase"] for m in data.memory].count("end") == 1
