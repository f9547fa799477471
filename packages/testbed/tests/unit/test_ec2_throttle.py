from __future__ import annotations

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.testbed.ec2.throttle import MUTATING, NON_MUTATING, BucketSpec, Throttle, action_category


def test_categories_follow_ec2_naming() -> None:
    assert action_category("DescribeNetworkInterfaces") == NON_MUTATING
    assert action_category("AssignPrivateIpAddresses") == MUTATING
    assert action_category("CreateTags") == MUTATING


def test_bucket_empties_then_refills_with_time() -> None:
    clock = FakeClock()
    throttle = Throttle({MUTATING: BucketSpec(capacity=2, refill_per_s=1.0)}, clock.monotonic)
    assert [throttle.admit("CreateTags") for _ in range(3)] == [True, True, False]
    clock.advance(0.5)
    assert throttle.admit("CreateTags") is False
    clock.advance(0.6)
    assert throttle.admit("CreateTags") is True
    assert throttle.admit("CreateTags") is False


def test_categories_have_separate_buckets_and_unconfigured_is_unlimited() -> None:
    throttle = Throttle({MUTATING: BucketSpec(capacity=1, refill_per_s=0.0)}, FakeClock().monotonic)
    assert throttle.admit("AttachNetworkInterface") is True
    assert throttle.admit("AttachNetworkInterface") is False
    assert all(throttle.admit("DescribeInstances") for _ in range(500))
    throttle.configure(MUTATING, None)
    assert throttle.admit("AttachNetworkInterface") is True


def test_unknown_category_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="mutating"):
        Throttle({}).configure("writes", BucketSpec(capacity=1, refill_per_s=1.0))
