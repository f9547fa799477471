"""From measured per-node call rates to a larger fleet, under the account's published buckets.

A bucket of capacity C refilled at r per second serves n calls no sooner than (n - C) / r seconds after the
first. Every node needs `c[b]` calls from bucket b to give its pods addresses (measured), so N nodes
joining within the window need at least max over b of (N * c[b] - C[b]) / r[b] seconds of the account, and
no less than the join window itself plus one node's own time. The measured run is projected at its own
size too, to show how close the model comes.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpccni.testbed.ec2.throttle import (
    ACCOUNT_ACTION_BUCKETS,
    ACCOUNT_CATEGORY_BUCKETS,
    UNFILTERED,
    BucketSpec,
    action_category,
)


def spec_of(bucket: str) -> BucketSpec:
    """The published size of a bucket named as `throttle.account_bucket` names it."""
    action, _, variant = bucket.partition("/")
    if variant == "unfiltered":
        return ACCOUNT_CATEGORY_BUCKETS[UNFILTERED]
    return ACCOUNT_ACTION_BUCKETS.get(action) or ACCOUNT_CATEGORY_BUCKETS[action_category(action)]


@dataclass(frozen=True, kw_only=True)
class Projection:
    nodes: int
    join_s: float
    bound_s: float  # the account's lower bound on the time until every node has what it needs
    binding_bucket: str
    per_bucket_s: dict[str, float]

    @property
    def time_to_all_ips_s(self) -> float:
        return max(self.bound_s, self.join_s)


def project(calls_per_node: dict[str, float], *, nodes: int, join_s: float, node_s: float) -> Projection:
    """`calls_per_node`: successful calls per node by bucket; `node_s`: one node's own time to its last
    pod address when nothing throttles it (added to the join window)."""
    per_bucket = {}
    for bucket, per_node in calls_per_node.items():
        spec = spec_of(bucket)
        per_bucket[bucket] = max(0.0, (nodes * per_node - spec.capacity) / spec.refill_per_s)
    binding = max(per_bucket, key=lambda b: per_bucket[b]) if per_bucket else ""
    bound = per_bucket.get(binding, 0.0)
    return Projection(
        nodes=nodes,
        join_s=round(join_s + node_s, 1),
        bound_s=round(bound, 1),
        binding_bucket=binding,
        per_bucket_s={b: round(s, 1) for b, s in sorted(per_bucket.items(), key=lambda kv: -kv[1])},
    )
