"""Selectors, PolicyEndpoint JSON (upstream's schema) and NetworkPolicy parsing with the API's defaults."""

from __future__ import annotations

import ipaddress

import pytest
from vpccni.netpol import networkpolicy, policyendpoint
from vpccni.netpol.model import Direction, Port, Protocol
from vpccni.netpol.selectors import LabelSelector, SelectorError


def test_selectors_and_every_operator() -> None:
    sel = LabelSelector.from_json(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"app": "web", "tier": "a", "team": "x"})
    assert sel.matches({"app": "web", "tier": "b", "team": "x", "env": "dev"})
    assert not sel.matches({"app": "web", "tier": "c", "team": "x"})
    assert not sel.matches({"app": "web", "tier": "a", "team": "x", "env": "prod"})
    assert not sel.matches({"app": "web", "tier": "a"})
    assert not sel.matches({"app": "web", "tier": "a", "team": "x", "legacy": "1"})
    assert LabelSelector.from_json({}).matches({}) and LabelSelector.from_json(None).is_empty
    assert LabelSelector.from_json(sel.to_json()) == sel
    assert sel.describe() == "app=web,tier in (a,b),env notin (prod),team,!legacy"


@pytest.mark.parametrize(
    "raw",
    [
        {"matchExpressions": [{"key": "a", "operator": "Like", "values": ["x"]}]},
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        {"matchExpressions": [{"operator": "Exists"}]},
        ["not", "a", "map"],
    ],
)
def test_selectors_the_api_would_refuse(raw: object) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.from_json(raw)  # type: ignore[arg-type]


UPSTREAM_PE = {
    "apiVersion": "networking.k8s.aws/v1alpha1",
    "kind": "PolicyEndpoint",
    "metadata": {"name": "web-xyz12", "namespace": "prod", "resourceVersion": "7"},
    "spec": {
        "policyRef": {"name": "web", "namespace": "prod"},
        "podSelector": {"matchLabels": {"app": "web"}},
        "podIsolation": ["Ingress", "Egress"],
        "podSelectorEndpoints": [
            {"hostIP": "10.0.0.4", "podIP": "10.0.0.15", "name": "web-1", "namespace": "prod"}
        ],
        "ingress": [
            {
                "cidr": "10.0.0.20",
                "ports": [
                    {"protocol": "TCP", "port": 80},
                    {"protocol": "TCP", "port": 8000, "endPort": 8080},
                ],
            },
            {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]},
        ],
        "egress": [{"cidr": "0.0.0.0/0", "ports": [{"protocol": "UDP", "port": 53}]}, {"cidr": "::/0"}],
    },
}


def test_an_upstream_policy_endpoint_parses_and_writes_back_the_same() -> None:
    pe = policyendpoint.from_json(UPSTREAM_PE)
    assert pe.key == ("prod", "web-xyz12") and str(pe.policy_ref) == "prod/web"
    assert pe.pod_isolation == (Direction.INGRESS, Direction.EGRESS) and pe.problems == ()
    assert pe.ingress[0].cidr == ipaddress.ip_network("10.0.0.20/32")
    assert pe.ingress[0].ports == (
        Port(protocol=Protocol.TCP, port=80),
        Port(protocol=Protocol.TCP, port=8000, end_port=8080),
    )
    assert pe.ingress[1].excepts == (ipaddress.ip_network("192.168.1.0/24"),)
    assert policyendpoint.spec_json(pe) == UPSTREAM_PE["spec"]


def test_a_bad_entry_is_left_out_and_reported_not_the_whole_object() -> None:
    raw = {
        "metadata": {"name": "p-1", "namespace": "x"},
        "spec": {
            "policyRef": {"name": "p", "namespace": "x"},
            "podIsolation": ["Ingress", "Sideways"],
            "ingress": [
                {"cidr": "10.0.0.0/33"},
                {"cidr": "10.0.0.0/24", "except": ["10.1.0.0/24"]},
                {"cidr": "10.0.0.1", "ports": [{"protocol": "ICMP"}]},
                {"cidr": "10.0.0.2", "ports": [{"port": "http"}]},
                {"cidr": "10.0.0.3", "ports": [{"port": 90, "endPort": 80}]},
                {"cidr": "10.0.0.4"},
            ],
        },
    }
    pe = policyendpoint.from_json(raw)
    assert [str(e.cidr) for e in pe.ingress] == ["10.0.0.4/32"]
    assert len(pe.problems) == 6 and "Sideways" in pe.problems[0]
    assert pe.isolates(Direction.INGRESS) and not pe.isolates(Direction.EGRESS)


def test_without_pod_isolation_the_rules_say_what_is_isolated() -> None:
    raw = {
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"policyRef": {"name": "p"}, "egress": [{"cidr": "10.0.0.1"}]},
    }
    pe = policyendpoint.from_json(raw)
    assert pe.policy_ref.namespace == "x"
    assert pe.isolates(Direction.EGRESS) and not pe.isolates(Direction.INGRESS)


def test_policy_types_default_as_the_api_server_sets_them() -> None:
    ingress_only = networkpolicy.from_json(
        {"metadata": {"name": "a", "namespace": "x"}, "spec": {"podSelector": {}}}
    )
    assert ingress_only.policy_types == (Direction.INGRESS,)
    both = networkpolicy.from_json(
        {
            "metadata": {"name": "a", "namespace": "x"},
            "spec": {"podSelector": {}, "egress": [{}], "ingress": [{}]},
        }
    )
    assert both.policy_types == (Direction.INGRESS, Direction.EGRESS)
    egress_only = networkpolicy.from_json(
        {"metadata": {"name": "a", "namespace": "x"},
         "spec": {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{"from": [{"podSelector": {}}]}]}}
    )  # fmt: skip
    assert egress_only.policy_types == (Direction.EGRESS,) and egress_only.ingress == ()


def test_network_policy_rules_peers_and_ports() -> None:
    np = networkpolicy.from_json(
        {
            "metadata": {"name": "a", "namespace": "x", "uid": "u-1"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {},
                    {"from": [], "ports": [{"port": "serve-80-tcp"}, {"port": "81", "protocol": "UDP"}]},
                    {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"port": 80, "endPort": 90}]},
                ],
            },
        }
    )  # fmt: skip
    assert np.ingress[0].peers is None and np.ingress[0].ports == ()
    assert np.ingress[1].peers is None
    assert [(p.protocol, p.port) for p in np.ingress[1].ports] == [
        (Protocol.TCP, "serve-80-tcp"),
        (Protocol.UDP, 81),
    ]
    both, block = np.ingress[2].peers or ()
    assert both.namespace_selector is not None and both.pod_selector is not None
    assert block.ip_block is not None and block.ip_block.excepts == (ipaddress.ip_network("10.1.0.0/16"),)
    assert np.ingress[2].ports[0].end_port == 90
    assert np.has_namespace_peers  # a rule without peers resolves named ports cluster-wide


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"ingress": [{"from": [{}]}]}, "needs podSelector"),
        ({"ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "ICMP"),
        ({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}, "endPort"),
        ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/40"}}]}]}, "ipBlock"),
        ({"policyTypes": ["Sideways"]}, "policyTypes"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Nope"}]}}, "spec.podSelector"),
    ],
)
def test_network_policies_validation_would_refuse(spec: dict[str, object], message: str) -> None:
    with pytest.raises(networkpolicy.PolicyError, match=message):
        networkpolicy.from_json({"metadata": {"name": "a", "namespace": "x"}, "spec": spec})
