from __future__ import annotations

from vpccni.testbed.ec2.calllog import CallLog, CallRecord
from vpccni.testbed.ec2.errors import Ec2Error
from vpccni.testbed.ec2.faults import FaultPlan


def test_injected_errors_are_consumed_in_order_and_wildcard_applies_last() -> None:
    plan = FaultPlan()
    plan.inject_error("AttachNetworkInterface", "AttachmentLimitExceeded", count=2)
    plan.inject_error("*", "InternalError")
    assert plan.take_error("DescribeInstances").code == "InternalError"  # type: ignore[union-attr]
    assert plan.take_error("AttachNetworkInterface").code == "AttachmentLimitExceeded"  # type: ignore[union-attr]
    assert plan.take_error("AttachNetworkInterface").code == "AttachmentLimitExceeded"  # type: ignore[union-attr]
    assert plan.take_error("AttachNetworkInterface") is None


def test_latency_per_action_with_wildcard_default() -> None:
    plan = FaultPlan()
    plan.set_latency("*", 0.5)
    plan.set_latency("CreateNetworkInterface", 2.0)
    assert plan.latency("CreateNetworkInterface") == 2.0
    assert plan.latency("DescribeSubnets") == 0.5
    plan.set_latency("*", 0)
    assert plan.latency("DescribeSubnets") == 0.0


def test_error_xml_carries_code_and_status() -> None:
    err = Ec2Error("RequestLimitExceeded", "Request limit exceeded.")
    assert err.status == 503
    assert b"<Code>RequestLimitExceeded</Code>" in err.to_xml()
    assert Ec2Error("InvalidParameterValue", "x").status == 400


def test_call_log_returns_a_copy() -> None:
    log = CallLog()
    log.append(CallRecord(action="DescribeInstances", params={}, error_code=None, started=1.0, duration=0.1))
    records = log.records()
    records.clear()
    assert [r.action for r in log.records()] == ["DescribeInstances"]


def test_call_log_counts_calls_in_flight_per_action() -> None:
    log = CallLog()
    log.begin("AttachNetworkInterface")
    log.begin("AttachNetworkInterface")
    log.begin("CreateNetworkInterface")
    log.end("AttachNetworkInterface")
    assert log.in_flight("AttachNetworkInterface") == 1
    assert log.in_flight("CreateNetworkInterface") == 1
    assert log.in_flight("DescribeInstances") == 0
