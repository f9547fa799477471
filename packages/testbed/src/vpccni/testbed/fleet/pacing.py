"""How a node paces its EC2 work: the product as it ships, or a model of upstream's aws-node on the same code.

Both run the product's own pool manager, planner, reconciler, allocator, datastore and EC2 client. The
upstream model changes only what upstream does differently in pacing (upstream-behaviour.md §3.4, §3.7,
§5.3, §5.6), each item by the knob the product has for it:

- one growth action per pool iteration, every 5 s (`increaseDatastorePool`): one ENI at a time, sized for
  the warm targets alone, no wake-up when pods drain the pool, and a throttled call retried at the next
  iteration;
- after attaching an ENI, IMDS polled until it lists the ENI and an address (`WaitForENIAndIPsAttached`);
- an ADD that finds no free address fails at once ("failed to assign an IP address to container"), and
  kubelet retries the sandbox 10-15 s later (the kubelet model is the same for both pacings);
- no client-side rate limiter; the SDK's standard retries (10 attempts, exponential back-off with full
  jitter, capped at 20 s), which retry throttled calls without knowing of any other node;
- the leaked-ENI sweep 0-300 s after start.

The model keeps vpccni's request shapes (filtered DescribeNetworkInterfaces and DescribeInstances, which
EC2 meters against larger buckets than upstream's id lists): that can only flatter upstream.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from vpccni.ipamd.pool.growth import DEFAULT_PACING, UPSTREAM_PACING, PoolPacing


class Pacing(enum.Enum):
    VPCCNI = "vpccni"
    UPSTREAM = "upstream"


@dataclass(frozen=True, kw_only=True)
class PacingModel:
    pacing: Pacing
    label: str
    env: Mapping[str, str] = field(default_factory=dict)  # settings on top of the fleet's
    add_wait_s: float | None = None  # None: the product's VPCCNI_ADD_WAIT_TIMEOUT; 0: fail at once
    pool_wakeups: bool = True  # the allocator wakes the pool manager when an ADD drains it
    pool: PoolPacing = DEFAULT_PACING
    imds_wait_after_attach: bool = False
    sdk_retries: bool = False  # the SDK retries throttled calls itself; the node never hears of them
    leak_first_delay_max_s: float | None = None  # None: the product's


MODELS: dict[Pacing, PacingModel] = {
    Pacing.VPCCNI: PacingModel(pacing=Pacing.VPCCNI, label="vpccni"),
    Pacing.UPSTREAM: PacingModel(
        pacing=Pacing.UPSTREAM,
        label="upstream pacing (model)",
        env={"VPCCNI_EC2_MUTATING_QPS": "0", "VPCCNI_EC2_READ_QPS": "0"},
        add_wait_s=0.0,
        pool_wakeups=False,
        pool=UPSTREAM_PACING,
        imds_wait_after_attach=True,
        sdk_retries=True,
        leak_first_delay_max_s=300.0,
    ),
}
