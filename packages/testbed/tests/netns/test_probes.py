"""The ping probe on real packets: a lost echo is retried within the timeout, a flow that answers nothing is
still reported unreachable."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterator

import pytest
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import ping
from vpccni.testbed.datapath.srccheck import counted_packets

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


def _table(match: str) -> str:
    """An input chain sending the echo requests `match` selects to a counted drop (`lost`)."""
    return f"""table ip probe {{
  set seen {{ type ipv4_addr; flags dynamic; }}
  chain input {{
    type filter hook input priority 0; policy accept;
    icmp type echo-request {match} jump lost
  }}
  chain lost {{
    counter drop
  }}
}}
"""


# The first echo request from each source (the set remembers who sent one), or every one.
DROP_FIRST = _table("ip saddr != @seen update @seen { ip saddr }")
DROP_ALL = _table("")


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("the netns tier needs root")
    name = f"vtb-probe-{secrets.token_hex(3)}"
    ns.create_netns(name)
    try:
        ns.exec_in_netns(name, ["ip", "link", "set", "lo", "up"])
        yield name
    finally:
        ns.delete_all([name])


def test_a_lost_first_echo_is_retried_within_the_timeout(netns: str) -> None:
    ns.exec_in_netns(netns, ["nft", "-f", "-"], stdin=DROP_FIRST)
    assert ping(netns, LOOPBACK, timeout=3)
    assert counted_packets(netns, "probe", "lost") == 1  # the first echo was lost, a later one answered


def test_a_flow_that_answers_nothing_is_reported_unreachable_after_a_few_echoes(netns: str) -> None:
    ns.exec_in_netns(netns, ["nft", "-f", "-"], stdin=DROP_ALL)
    assert not ping(netns, LOOPBACK, timeout=2)
    assert counted_packets(netns, "probe", "lost") == 2  # one echo a second
    assert not ping(netns, LOOPBACK, timeout=1)
    assert counted_packets(netns, "probe", "lost") == 3  # a 1 s probe sends one echo
