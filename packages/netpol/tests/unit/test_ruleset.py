"""The table text the agent writes, and the pure pieces around it (effective policy, introspection)."""

from __future__ import annotations

import ipaddress
import json

from vpccni.netpol import policyendpoint
from vpccni.netpol.agent.effective import Isolation, LocalPod, effective_policy
from vpccni.netpol.agent.ruleset import build_ruleset, render
from vpccni.netpol.model import Direction, Protocol
from vpccni.netpol.testing import introspection_of

PE = policyendpoint.from_json(
    {
        "metadata": {"namespace": "x", "name": "web-1"},
        "spec": {
            "policyRef": {"name": "web", "namespace": "x"},
            "podSelector": {"matchLabels": {"app": "web"}},
            "podIsolation": ["Ingress", "Egress"],
            "ingress": [
                {
                    "cidr": "10.0.0.0/24",
                    "except": ["10.0.0.128/25"],
                    "ports": [{"protocol": "TCP", "port": 80}],
                }
            ],
            "egress": [{"cidr": "10.0.1.5"}, {"cidr": "::/0", "ports": [{"protocol": "UDP", "port": 53}]}],
        },
    }
)
WEB = LocalPod(namespace="x", name="web-1", labels={"app": "web"}, veth="eni0123456789a", ips=("10.0.0.9",))
DB = LocalPod(namespace="x", name="db-0", labels={"app": "db"}, veth="enibbbbbbbbbbb")


def test_golden_table() -> None:
    ruleset = build_ruleset(
        [effective_policy(p, [PE], strict=False) for p in (WEB, DB)], strict_pods=["enicccccccccc"]
    )
    [inbound] = [n for n in ruleset.chains if n.startswith("in-")]
    [outbound] = [n for n in ruleset.chains if n.startswith("eg-")]
    assert render(ruleset) == (
        "\tmap egress-pods {\n\t\ttype ifname : verdict\n"
        f'\t\telements = {{ "eni0123456789a" : jump {outbound} }}\n\t}}\n'
        "\tmap ingress-pods {\n\t\ttype ifname : verdict\n"
        f'\t\telements = {{ "eni0123456789a" : jump {inbound} }}\n\t}}\n'
        '\tset strict-pods {\n\t\ttype ifname\n\t\telements = { "enicccccccccc" }\n\t}\n'
        f"\tset {outbound}-a4 {{\n\t\ttype ipv4_addr\n\t\tflags interval\n"
        "\t\telements = { 10.0.1.5 }\n\t}\n"
        f"\tset {outbound}-p6 {{\n\t\ttype ipv6_addr . inet_proto . inet_service\n\t\tflags interval\n"
        "\t\telements = { ::/0 . udp . 53 }\n\t}\n"
        f"\tchain {outbound} {{\n\t\tip daddr @{outbound}-a4 return\n"
        f"\t\tip6 daddr . meta l4proto . th dport @{outbound}-p6 return\n\t\tcounter drop\n\t}}\n"
        f"\tset {inbound}-p4 {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags interval\n"
        "\t\telements = { 10.0.0.0/25 . tcp . 80 }\n\t}\n"
        f"\tchain {inbound} {{\n\t\tip saddr . meta l4proto . th dport @{inbound}-p4 return\n"
        "\t\tcounter drop\n\t}\n"
        "\tchain pod-policy {\n\t\ttype filter hook forward priority filter; policy accept;\n"
        "\t\tct state established,related accept\n"
        "\t\tiifname vmap @egress-pods\n\t\toifname vmap @ingress-pods\n\t}\n"
    )


def test_strict_pods_without_policy_are_isolated_both_ways_with_the_reason() -> None:
    policy = effective_policy(DB, [PE], strict=True)
    assert policy.ingress.isolation is Isolation.STRICT_DEFAULT is policy.egress.isolation
    assert effective_policy(WEB, [PE], strict=True).ingress.isolation is Isolation.POLICY


def test_introspection_explains_which_rule_decides() -> None:
    view = introspection_of([WEB, DB], [PE])

    def explain(**q: str) -> dict[str, object]:
        status, _, body = view.explain({"namespace": "x", "name": "web-1", **q})
        assert status == 200
        return dict(json.loads(body))

    ok = explain(direction="ingress", peer="10.0.0.7", protocol="tcp", port="80")
    assert ok["allowed"] is True and "x/web (web-1 ingress[0])" in str(ok["reason"])
    no = explain(direction="ingress", peer="10.0.0.200", protocol="TCP", port="80")
    assert no["allowed"] is False and "no rule" in str(no["reason"])
    icmp = explain(direction="egress", peer="10.0.1.5")
    assert icmp["allowed"] is True
    assert explain(direction="egress", peer="10.0.1.6", protocol="UDP", port="53")["allowed"] is False
    status, _, body = view.pod({"namespace": "x", "name": "db-0"})
    doc = json.loads(body)
    assert status == 200 and doc["ingress"] == {"isolation": "open", "kernel": "no entry (open)"}
    assert view.pod({"namespace": "x", "name": "nope"})[0] == 404
    assert view.explain({"namespace": "x", "name": "web-1", "peer": "bogus"})[0] == 400


def test_direction_decisions_follow_the_reference_semantics() -> None:
    policy = effective_policy(WEB, [PE], strict=False)
    decide = policy.direction(Direction.INGRESS).decide
    assert decide(ipaddress.ip_address("10.0.0.1"), Protocol.TCP, 80).allowed
    assert not decide(ipaddress.ip_address("10.0.0.129"), Protocol.TCP, 80).allowed
    assert not decide(ipaddress.ip_address("10.0.0.1"), Protocol.UDP, 80).allowed
    assert not decide(ipaddress.ip_address("10.0.0.1"), None, None).allowed
