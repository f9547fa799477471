"""NetworkPolicy -> PolicyEndpoints: peers, named ports, merging, chunking, which pods count."""

from __future__ import annotations

import ipaddress
from typing import Any

from vpccni.netpol import networkpolicy
from vpccni.netpol.controller.cluster import ClusterPod, Namespace, namespace_from_json, pod_from_json
from vpccni.netpol.controller.resolve import Cluster, endpoint_base_name, merge_endpoints, resolve
from vpccni.netpol.model import Direction, EndpointInfo, Port, Protocol


def pod(ns: str, name: str, ip: str, labels: dict[str, str] | None = None, **ports: int) -> ClusterPod:
    return ClusterPod(
        namespace=ns,
        name=name,
        labels=labels if labels is not None else {"pod": name},
        ip=ipaddress.ip_address(ip),
        named_ports={(k.replace("_", "-"), Protocol.TCP): v for k, v in ports.items()},
    )


def cluster(*pods: ClusterPod, namespaces: dict[str, dict[str, str]] | None = None) -> Cluster:
    spaces = namespaces or {"x": {}, "y": {}}
    return Cluster(
        pods, [namespace_from_json({"metadata": {"name": n, "labels": v}}) for n, v in spaces.items()]
    )


def np(spec: dict[str, Any], name: str = "p", ns: str = "x") -> networkpolicy.NetworkPolicy:
    return networkpolicy.from_json(
        {"metadata": {"name": name, "namespace": ns, "uid": "uid-1"}, "spec": spec}
    )


def cidrs(entries: tuple[EndpointInfo, ...]) -> list[str]:
    return [str(e.cidr) for e in entries]


XA, XB, YA = (
    pod("x", "a", "10.0.0.10", http=80),
    pod("x", "b", "10.0.0.11", http=8080),
    pod("y", "a", "10.0.1.10"),
)


def test_pod_and_namespace_selectors_alone_and_together() -> None:
    c = cluster(XA, XB, YA, namespaces={"x": {}, "y": {"team": "blue"}})
    [pe] = resolve(
        np({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {}}]}]}), c
    )
    assert cidrs(pe.ingress) == ["10.0.0.10/32", "10.0.0.11/32"]
    assert [p.name for p in pe.pod_selector_endpoints] == ["a"] and pe.pod_isolation == (Direction.INGRESS,)
    [pe] = resolve(
        np(
            {
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}],
            }
        ),
        c,
    )
    assert cidrs(pe.ingress) == ["10.0.1.10/32"]
    both = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}
    [pe] = resolve(np({"podSelector": {}, "ingress": [{"from": [both]}]}), c)
    assert cidrs(pe.ingress) == ["10.0.0.10/32", "10.0.1.10/32"]
    by_name = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}
    [pe] = resolve(np({"podSelector": {}, "ingress": [{"from": [by_name]}]}), c)
    assert cidrs(pe.ingress) == ["10.0.1.10/32"]


def test_a_rule_without_peers_is_every_address_of_both_families() -> None:
    [pe] = resolve(
        np({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}), cluster(XA)
    )
    assert pe.pod_isolation == (Direction.INGRESS, Direction.EGRESS)
    assert cidrs(pe.egress) == ["0.0.0.0/0", "::/0"] and pe.egress[0].ports == (
        Port(protocol=Protocol.UDP, port=53),
    )


def test_ingress_named_ports_resolve_on_the_target_pods_for_any_peer() -> None:
    spec = {
        "podSelector": {},
        "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}], "ports": [{"port": "http"}]}],
    }
    [pe] = resolve(np(spec), cluster(XA, XB))
    assert pe.ingress[0].ports == (Port(port=80), Port(port=8080))


def test_egress_named_ports_resolve_on_each_peer_and_on_every_pod_without_peers() -> None:
    spec = {"podSelector": {}, "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}]}
    [pe] = resolve(np(spec), cluster(XA, XB, YA))
    assert [(str(e.cidr), e.ports) for e in pe.egress] == [
        ("10.0.0.10/32", (Port(port=80),)),
        ("10.0.0.11/32", (Port(port=8080),)),
    ]
    spec = {"podSelector": {}, "egress": [{"ports": [{"port": "http"}, {"port": 443}]}]}
    [pe] = resolve(np(spec), cluster(XA, XB, YA))
    assert [(str(e.cidr), e.ports) for e in pe.egress] == [
        ("0.0.0.0/0", (Port(port=443),)),
        ("10.0.0.10/32", (Port(port=80),)),
        ("10.0.0.11/32", (Port(port=8080),)),
        ("::/0", (Port(port=443),)),
    ]


def test_a_rule_whose_ports_all_fail_to_resolve_allows_nothing() -> None:
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": "no-such-port"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": "http"}]},
                       {"ports": [{"port": "no-such-port"}]}]}  # fmt: skip
    [pe] = resolve(np(spec), cluster(XA, XB))
    assert pe.ingress == () and pe.egress == ()
    assert pe.pod_isolation == (Direction.INGRESS, Direction.EGRESS)


def test_finished_host_network_and_unaddressed_pods_are_never_peers() -> None:
    raw = [
        {
            "metadata": {"name": "done", "namespace": "x"},
            "status": {"phase": "Succeeded", "podIP": "10.0.0.20"},
        },
        {
            "metadata": {"name": "host", "namespace": "x"},
            "spec": {"hostNetwork": True},
            "status": {"podIP": "10.0.0.4"},
        },
        {"metadata": {"name": "new", "namespace": "x"}, "status": {"phase": "Pending"}},
        {"metadata": {"name": "ok", "namespace": "x"}, "status": {"phase": "Running", "podIP": "10.0.0.21"}},
    ]
    c = cluster(*(pod_from_json(o) for o in raw))
    [pe] = resolve(np({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}), c)
    assert cidrs(pe.ingress) == ["10.0.0.21/32"]


def test_entries_merge_only_with_equal_cidr_and_excepts() -> None:
    net = ipaddress.ip_network
    merged = merge_endpoints(
        [
            EndpointInfo(cidr=net("10.0.0.0/8"), excepts=(net("10.1.0.0/16"),), ports=(Port(port=80),)),
            EndpointInfo(cidr=net("10.0.0.0/8"), excepts=(net("10.2.0.0/16"),), ports=(Port(port=81),)),
            EndpointInfo(cidr=net("10.0.0.5/32"), ports=(Port(port=80),)),
            EndpointInfo(cidr=net("10.0.0.5/32"), ports=(Port(port=81),)),
            EndpointInfo(cidr=net("10.0.0.6/32"), ports=(Port(port=81),)),
            EndpointInfo(cidr=net("10.0.0.6/32")),
        ]
    )
    assert [(str(e.cidr), [str(x) for x in e.excepts], [p.port for p in e.ports]) for e in merged] == [
        ("10.0.0.0/8", ["10.1.0.0/16"], [80]),
        ("10.0.0.0/8", ["10.2.0.0/16"], [81]),
        ("10.0.0.5/32", [], [80, 81]),
        ("10.0.0.6/32", [], []),
    ]


def test_large_policies_are_split_into_chunks_with_the_same_selector() -> None:
    pods = [pod("x", f"p{i}", f"10.0.{i // 200}.{i % 200 + 1}") for i in range(450)]
    policy = np({"podSelector": {"matchLabels": {"pod": "p0"}}, "ingress": [{"from": [{"podSelector": {}}]}]})
    pes = resolve(policy, cluster(*pods), chunk_size=200)
    assert [pe.name for pe in pes] == [
        endpoint_base_name(policy),
        f"{endpoint_base_name(policy)}-1",
        f"{endpoint_base_name(policy)}-2",
    ]
    assert [len(pe.ingress) for pe in pes] == [200, 200, 50]
    assert all(
        pe.pod_selector == policy.pod_selector and pe.pod_isolation == (Direction.INGRESS,) for pe in pes
    )
    assert sum(len(pe.pod_selector_endpoints) for pe in pes) == 1


def test_names_are_stable_per_policy_and_new_for_a_recreated_one() -> None:
    a = np({"podSelector": {}}, name="web")
    assert endpoint_base_name(a) == endpoint_base_name(np({"podSelector": {}}, name="web"))
    b = networkpolicy.from_json({"metadata": {"name": "web", "namespace": "x", "uid": "uid-2"}, "spec": {}})
    assert endpoint_base_name(a) != endpoint_base_name(b) and endpoint_base_name(a).startswith("web-")
    long = np({"podSelector": {}}, name="n" * 253)
    assert len(endpoint_base_name(long)) <= 253


def test_namespaces_always_carry_their_name_label() -> None:
    ns = namespace_from_json({"metadata": {"name": "y", "labels": {"team": "blue"}}})
    assert ns == Namespace(name="y", labels={"team": "blue", "kubernetes.io/metadata.name": "y"})
