from __future__ import annotations

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.testbed.ec2.throttle import (
    MUTATING,
    NON_MUTATING,
    AccountThrottle,
    BucketSpec,
    Throttle,
    account_bucket,
    action_category,
)


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


def test_account_limits_are_per_action_with_ec2_s_published_sizes() -> None:
    clock = FakeClock()
    account = AccountThrottle(clock.monotonic)
    # AttachNetworkInterface is a plain mutating action: 50 / 5 per s, its own bucket.
    assert sum(account.admit("AttachNetworkInterface", {}) for _ in range(60)) == 50
    # ...which does not spend the budget of another action, sized 100 / 5 (an "uncategorized" action).
    assert sum(account.admit("CreateNetworkInterface", {}) for _ in range(120)) == 100
    clock.advance(1.0)
    assert sum(account.admit("AttachNetworkInterface", {}) for _ in range(10)) == 5


def test_unfiltered_describes_draw_on_the_smaller_bucket() -> None:
    account = AccountThrottle(FakeClock().monotonic)
    by_id = {"InstanceId.1": "i-1"}
    filtered = {"Filter.1.Name": "instance-id", "Filter.1.Value.1": "i-1"}
    assert account_bucket("DescribeInstances", by_id) == (
        "DescribeInstances/unfiltered",
        BucketSpec(capacity=50, refill_per_s=10.0),
    )
    assert sum(account.admit("DescribeInstances", by_id) for _ in range(80)) == 50
    assert sum(account.admit("DescribeInstances", filtered) for _ in range(150)) == 100
    paged = {"MaxResults": "1000"}
    assert account_bucket("DescribeNetworkInterfaces", paged)[0] == "DescribeNetworkInterfaces"
    assert account_bucket("DescribeSubnets", {})[0] == "DescribeSubnets"  # not a listed action


def test_account_categories_switch_off_and_on() -> None:
    account = AccountThrottle(FakeClock().monotonic)
    account.configure(MUTATING, None)
    assert all(account.admit("AttachNetworkInterface", {}) for _ in range(500))
    account.configure(MUTATING, BucketSpec(capacity=1, refill_per_s=1.0))  # back on, EC2's sizes
    assert sum(account.admit("AttachNetworkInterface", {}) for _ in range(60)) == 50
