"""The agent's kernel side with real packets: pods wired as ipamd wires them in a node namespace, the
`inet vpccni-netpol` table written by `NftPolicyTables`, TCP and UDP probes between the pods."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from vpccni.netpol.agent.conntrack import ConntrackTool
from vpccni.netpol.agent.effective import LocalPod, effective_policy
from vpccni.netpol.agent.ruleset import DROP, build_ruleset
from vpccni.netpol.agent.tables import NftPolicyTables
from vpccni.netpol.policyendpoint import from_json
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.netpol.podhost import HostedPod, PodHost
from vpccni.testbed.netpol.probe import Outcome, PolicyServers, Probe, Proto, probe_all

PORTS = (80, 81)
PROTOS = (Proto.TCP, Proto.UDP)


@pytest.fixture
def cluster() -> Iterator[tuple[PodHost, dict[str, HostedPod]]]:
    if os.geteuid() != 0:
        pytest.skip("the netns tier needs root")
    with PodHost(tag="enf") as host, PolicyServers() as servers:
        pods = {
            name: host.add_pod(namespace="x", name=name, ip=f"10.1.0.{10 + i}")
            for i, name in enumerate(("a", "b", "c"))
        }
        for pod in pods.values():
            servers.listen(pod.netns, PORTS, PROTOS)
        yield host, pods


def policy_endpoint(name: str, spec: dict[str, Any]) -> Any:
    return from_json(
        {"metadata": {"name": f"{name}-x1", "namespace": "x"}, "spec": {"policyRef": {"name": name}, **spec}}
    )


def enforce(host: PodHost, pods: dict[str, HostedPod], pes: Sequence[Any], *, strict: bool = False) -> Any:
    local = [LocalPod(namespace="x", name=n, labels={"pod": n}, veth=p.veth) for n, p in pods.items()]
    ruleset = build_ruleset(
        [effective_policy(p, pes, strict=strict) for p in local],
        strict_pods=[p.veth for p in local] if strict else (),
    )
    NftPolicyTables(runner=host.runner).apply(ruleset)
    return ruleset


def reachable(pods: dict[str, HostedPod]) -> set[tuple[str, str, int, str]]:
    """Every (from, to, port, protocol) that connects."""
    keys = [(s, d, port, proto) for s in pods for d in pods if s != d for port in PORTS for proto in PROTOS]
    probes = [
        Probe(source_netns=pods[s].netns, address=str(pods[d].ip), port=p, protocol=pr)
        for s, d, p, pr in keys
    ]
    outcomes = probe_all(probes)
    assert Outcome.REFUSED not in outcomes and Outcome.ERROR not in outcomes
    return {
        (s, d, port, proto.value)
        for (s, d, port, proto), o in zip(keys, outcomes, strict=True)
        if o is Outcome.CONNECTED
    }


def everything(pods: dict[str, HostedPod]) -> set[tuple[str, str, int, str]]:
    return {(s, d, port, pr.value) for s in pods for d in pods if s != d for port in PORTS for pr in PROTOS}


def test_without_policies_every_pod_reaches_every_pod(cluster) -> None:
    host, pods = cluster
    enforce(host, pods, [])
    assert reachable(pods) == everything(pods)


def test_ingress_allows_only_the_named_peer_port_and_protocol(cluster) -> None:
    host, pods = cluster
    pe = policy_endpoint(
        "allow-a-80",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "podIsolation": ["Ingress"],
            "ingress": [{"cidr": str(pods["a"].ip), "ports": [{"protocol": "TCP", "port": 80}]}],
        },
    )
    enforce(host, pods, [pe])
    blocked = {(s, "b", port, pr) for s in ("a", "c") for port in PORTS for pr in ("TCP", "UDP")}
    assert reachable(pods) == (everything(pods) - blocked) | {("a", "b", 80, "TCP")}


def test_egress_ipblock_with_except_and_port_range(cluster) -> None:
    host, pods = cluster
    pe = policy_endpoint(
        "egress-a",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "podIsolation": ["Egress"],
            "egress": [
                {
                    "cidr": "10.1.0.0/24",
                    "except": [f"{pods['c'].ip}/32"],
                    "ports": [{"protocol": "UDP", "port": 80, "endPort": 81}],
                }
            ],
        },
    )
    enforce(host, pods, [pe])
    from_a = {("a", d, port, pr) for d in ("b", "c") for port in PORTS for pr in ("TCP", "UDP")}
    assert reachable(pods) == (everything(pods) - from_a) | {("a", "b", 80, "UDP"), ("a", "b", 81, "UDP")}


def test_several_policies_on_one_pod_allow_their_union(cluster) -> None:
    host, pods = cluster
    one = policy_endpoint(
        "from-a",
        {"podSelector": {}, "podIsolation": ["Ingress"], "ingress": [{"cidr": str(pods["a"].ip)}]},
    )
    two = policy_endpoint(
        "from-c-81",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "podIsolation": ["Ingress"],
            "ingress": [{"cidr": str(pods["c"].ip), "ports": [{"protocol": "TCP", "port": 81}]}],
        },
    )
    enforce(host, pods, [one, two])
    assert reachable(pods) == {
        *{("a", d, port, pr) for d in ("b", "c") for port in PORTS for pr in ("TCP", "UDP")},
        ("c", "b", 81, "TCP"),
    }


def test_a_policy_that_allows_nothing_drops_in_the_verdict_map(cluster) -> None:
    host, pods = cluster
    deny = policy_endpoint("deny", {"podSelector": {}, "podIsolation": ["Ingress", "Egress"]})
    ruleset = enforce(host, pods, [deny])
    assert set(ruleset.ingress.values()) == {DROP} and ruleset.chains == {}
    assert reachable(pods) == set()


def test_strict_pods_without_policy_are_denied_and_recorded_in_the_table(cluster) -> None:
    host, pods = cluster
    enforce(host, pods, [], strict=True)
    assert reachable(pods) == set()
    tables = NftPolicyTables(runner=host.runner)
    assert tables.strict_pods() == frozenset(p.veth for p in pods.values())
    assert tables.remove() and tables.strict_pods() is None
    assert reachable(pods) == everything(pods)


def test_identical_policies_share_one_chain(cluster) -> None:
    host, pods = cluster
    pe = policy_endpoint(
        "from-c", {"podSelector": {}, "podIsolation": ["Ingress"], "ingress": [{"cidr": str(pods["c"].ip)}]}
    )
    ruleset = enforce(host, pods, [pe])
    assert len(ruleset.chains) == 1
    assert ruleset.ingress[pods["a"].veth] == ruleset.ingress[pods["b"].veth]


def _connect(pod: HostedPod, target: HostedPod, port: int) -> socket.socket:
    return ns.connect_tcp(pod.netns, str(target.ip), port, timeout=3)


def test_established_connections_survive_a_deny_and_a_table_rewrite(cluster) -> None:
    host, pods = cluster
    enforce(host, pods, [])
    with ns.listen_tcp(pods["b"].netns, "0.0.0.0", 8080) as listener:
        client = _connect(pods["a"], pods["b"], 8080)
        server, _ = listener.accept()
        with client, server:
            deny = policy_endpoint("deny", {"podSelector": {}, "podIsolation": ["Ingress", "Egress"]})
            enforce(host, pods, [deny])
            enforce(host, pods, [deny])  # an agent restart writes the same table again
            client.sendall(b"still here")
            server.settimeout(3)
            assert server.recv(64) == b"still here"
            server.sendall(b"and back")
            client.settimeout(3)
            assert client.recv(64) == b"and back"
            with pytest.raises(OSError):
                _connect(pods["a"], pods["b"], 8080).close()


def test_a_strict_admission_adds_its_drops_and_keeps_every_other_entry(cluster) -> None:
    host, pods = cluster
    tables = NftPolicyTables(runner=host.runner)
    tables.add_strict_pod(pods["c"].veth)  # no table yet: one with only this pod denied
    assert tables.strict_pods() == {pods["c"].veth}
    assert {(s, d) for s, d, _, _ in reachable(pods)} == {("a", "b"), ("b", "a")}
    pe = policy_endpoint(
        "from-a", {"podSelector": {"matchLabels": {"pod": "b"}}, "podIsolation": ["Ingress"],
                   "ingress": [{"cidr": str(pods["a"].ip)}]}
    )  # fmt: skip
    enforce(host, pods, [pe])
    tables.add_strict_pod(pods["b"].veth)  # b already has a chain: it stays
    tables.add_strict_pod(pods["a"].veth)
    assert tables.strict_pods() == {pods["a"].veth, pods["b"].veth}
    assert {(s, d) for s, d, _, _ in reachable(pods)} == set()  # a denied both ways; c -> b not allowed
    enforce(host, pods, [pe])
    assert ("a", "b", 80, "UDP") in reachable(pods)


def test_conntrack_entries_of_an_address_are_deleted(cluster) -> None:
    host, pods = cluster
    enforce(host, pods, [])
    assert ("a", "b", 80, "UDP") in reachable(pods)
    listed = ns.exec_in_netns(host.node, ["conntrack", "-L", "-s", str(pods["a"].ip)])
    assert str(pods["b"].ip) in listed
    assert ConntrackTool(runner=host.runner).forget(str(pods["a"].ip)) >= 1
    assert str(pods["b"].ip) not in ns.exec_in_netns(host.node, ["conntrack", "-L", "-s", str(pods["a"].ip)])
    assert ConntrackTool(runner=host.runner).forget("10.9.9.9") == 0
