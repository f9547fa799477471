from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from vpccni.networkutils.eni import (
    EniNetwork,
    EniNotFoundError,
    LinkRetry,
    existing_eni_table,
    setup_eni_network,
    teardown_eni_network,
)
from vpccni.networkutils.model import Address, Route, Rule, Scope
from vpccni.networkutils.testing import FakeNamespace, FakeNetwork

MAC = "0a:00:00:00:00:02"
ENI = EniNetwork(
    mac=MAC,
    primary_ip=IPv4Address("10.0.97.200"),
    subnet=IPv4Network("10.0.96.0/19"),
    route_table=2,
    mtu=9001,
)


@pytest.fixture
def host() -> FakeNamespace:
    _, ns = FakeNetwork().add_namespace("host")
    ns.add_link("eth1", mac=MAC.upper())
    return ns


def test_setup_builds_table_rule_and_address(host: FakeNamespace) -> None:
    host.add_ip("eth1", "10.9.9.9/24")  # stale address from a previous owner
    host.add_ip("eth1", "169.254.3.3/16")  # link-local stays
    assert setup_eni_network(host, ENI) == "eth1"
    link = host.link("eth1")
    assert link is not None and link.up and link.mtu == 9001
    assert host.addresses("eth1") == [
        Address(ifname="eth1", interface=IPv4Interface("169.254.3.3/16")),
        Address(ifname="eth1", interface=IPv4Interface("10.0.97.200/19")),
    ]
    assert host.routes(2) == [
        Route(dst=IPv4Network("10.0.96.1/32"), ifname="eth1", scope=Scope.LINK, table=2),
        Route(dst=IPv4Network("0.0.0.0/0"), ifname="eth1", gateway=IPv4Address("10.0.96.1"), table=2),
    ]
    assert all(route.dst != IPv4Network("10.0.96.0/19") for route in host.routes(254))
    assert [r for r in host.rules() if r.priority == 32765] == [
        Rule(priority=32765, table=2, src=IPv4Network("10.0.97.200/32"))
    ]
    # Again: same result, no duplicate rule.
    setup_eni_network(host, ENI)
    assert len([r for r in host.rules() if r.priority == 32765]) == 1


def test_trunk_gets_no_rule(host: FakeNamespace) -> None:
    setup_eni_network(host, EniNetwork(**{**ENI.__dict__, "is_trunk": True}))
    assert all(r.priority != 32765 for r in host.rules())


def test_waits_for_link_to_appear(host: FakeNamespace) -> None:
    host.link_appears_after[MAC] = 2
    sleeps: list[float] = []
    setup_eni_network(host, ENI, retry=LinkRetry(attempts=5, interval_s=3.0, sleep=sleeps.append))
    assert sleeps == [0.05, 0.1]  # looks again soon: the link is used as soon as it is there


def test_link_polling_keeps_upstream_s_total_wait() -> None:
    delays = LinkRetry(attempts=5, interval_s=3.0).delays()
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4] and max(delays) == 3.0 and sum(delays) == 12.0
    assert LinkRetry(attempts=1).delays() == []  # one look, no wait
    assert LinkRetry(attempts=3, interval_s=0.2, first_interval_s=0).delays() == [0.2, 0.2]


def test_missing_link_error_says_what_to_check(host: FakeNamespace) -> None:
    other = EniNetwork(**{**ENI.__dict__, "mac": "0a:ff:00:00:00:09"})
    with pytest.raises(EniNotFoundError, match="check that the ENI is"):
        setup_eni_network(host, other, retry=LinkRetry(attempts=2, interval_s=0, sleep=lambda _: None))


def test_teardown_deletes_every_from_rule(host: FakeNamespace) -> None:
    setup_eni_network(host, ENI)
    host.add_rule(Rule(priority=32765, table=9, src=IPv4Network("10.0.97.200/32")))
    assert teardown_eni_network(host, ENI.primary_ip) == 2
    assert teardown_eni_network(host, ENI.primary_ip) == 0
    assert all(r.src != IPv4Network("10.0.97.200/32") for r in host.rules())


def test_existing_table_is_found_for_reuse(host: FakeNamespace) -> None:
    assert existing_eni_table(host, ENI.primary_ip) is None
    host.add_rule(Rule(priority=32765, table=17, src=IPv4Network("10.0.97.200/32")))
    assert existing_eni_table(host, ENI.primary_ip) == 17


def test_route_failures_are_retried_with_backoff(
    host: FakeNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = host.replace_route
    failures = iter([True, True, False, False])

    def flaky(route: Route) -> None:
        if next(failures):
            raise OSError(101, "Network is unreachable")
        real(route)

    monkeypatch.setattr(host, "replace_route", flaky)
    sleeps: list[float] = []
    setup_eni_network(host, ENI, retry=LinkRetry(attempts=1, sleep=sleeps.append))
    assert sleeps == [0.5, 1.0]
    assert len(host.routes(2)) == 2
