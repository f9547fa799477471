from __future__ import annotations

from vpccni.awsutils.testing import FakeClock
from vpccni.testbed.imds.history import SnapshotHistory
from vpccni.testbed.imds.metadata import lookup
from vpccni.testbed.imds.server import TokenStore

SNAP = {
    "instance-id": "i-1",
    "mac": "02:00:00:00:00:01",
    "placement/region": "us-west-2",
    "network/interfaces/macs/02:00:00:00:00:01/local-ipv4s": "10.0.0.4\n10.0.0.5",
    "network/interfaces/macs/02:00:00:00:00:02/device-number": "1",
}


def test_leaves_and_directory_listings() -> None:
    assert lookup(SNAP, "instance-id") == "i-1"
    assert str(lookup(SNAP, "")).split("\n") == ["instance-id", "mac", "network/", "placement/"]
    assert lookup(SNAP, "network/interfaces/macs/") == "02:00:00:00:00:01/\n02:00:00:00:00:02/"
    assert lookup(SNAP, "network/interfaces/macs/02:00:00:00:00:01/local-ipv4s") == "10.0.0.4\n10.0.0.5"
    assert lookup(SNAP, "network/interfaces/macs/02:00:00:00:00:01/ipv4-prefix") is None


def test_history_serves_the_state_as_it_was_lag_seconds_ago() -> None:
    clock = FakeClock()
    history = SnapshotHistory(clock.monotonic)
    history.record("i-1", {"v": "1"})
    clock.advance(10.0)
    history.record("i-1", {"v": "2"})
    clock.advance(2.0)
    assert history.as_of("i-1", 0) == {"v": "2"}
    assert history.as_of("i-1", 5) == {"v": "1"}
    assert history.as_of("i-1", 100) == {"v": "1"}  # older than anything recorded: the oldest state
    assert history.as_of("i-2", 0) is None


def test_tokens_expire_after_their_ttl() -> None:
    clock = FakeClock()
    tokens = TokenStore(clock.monotonic)
    token = tokens.issue(60)
    assert tokens.valid(token) and not tokens.valid("forged") and not tokens.valid(None)
    clock.advance(61.0)
    assert not tokens.valid(token)
