"""Run-time control of a running testbed over HTTP (POST /_testbed/control on the EC2 endpoint, JSON body).

Lets a process that did not start the testbed (a benchmark, the demo, `vpccni-testbed up` users) change
throttling, latency, faults and IMDS behaviour, and read the call log.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from vpccni.testbed.imds.server import Outage

if TYPE_CHECKING:
    from vpccni.testbed.cloud import Cloud

CONTROL_PATH = "/_testbed/control"


def apply(cloud: Cloud, request: dict[str, Any]) -> dict[str, Any]:
    """One operation: {"op": "<Cloud method>", ...its keyword arguments}. Returns a JSON-able answer."""
    op = request.get("op")
    args = {k: v for k, v in request.items() if k != "op"}
    if op == "set_latency":
        cloud.set_latency(str(args["action"]), float(args["seconds"]))
    elif op == "inject_error":
        cloud.inject_error(str(args["action"]), str(args["code"]), int(args.get("count", 1)))
    elif op == "set_throttle":
        cloud.set_throttle(str(args["category"]), int(args["capacity"]), float(args["refill_per_s"]))
    elif op == "disable_throttle":
        cloud.disable_throttle(str(args["category"]))
    elif op == "set_imds_lag":
        cloud.set_imds_lag(float(args["seconds"]))
    elif op == "set_imds_outage":
        mode = Outage(args["mode"]) if "mode" in args else None
        cloud.set_imds_outage(bool(args["on"]), mode)
    elif op == "call_log":
        return {"calls": [asdict(r) for r in cloud.call_log]}
    else:
        raise ValueError(
            f"unknown control op {op!r}: use set_latency, inject_error, set_throttle, disable_throttle, "
            "set_imds_lag, set_imds_outage or call_log"
        )
    return {"ok": True}
