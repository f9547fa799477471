"""The accounting the chaos suite holds a node to: lost, double-assigned, leaked addresses, veths, rules."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from vpccni.testbed.chaos.ledger import Holding, NodeView, PodRef, evaluate

A = PodRef(namespace="ns", name="a", container_id="c" * 64, netns="vpod-a")
B = PodRef(namespace="ns", name="b", container_id="d" * 64, netns="vpod-b")
IP_A, IP_B, IP_X = IPv4Address("10.0.0.5"), IPv4Address("10.0.0.6"), IPv4Address("10.0.0.7")


def veth(pod: PodRef) -> str:
    return f"eni-{pod.name}"


def holding(pod: PodRef, ip: IPv4Address, *, scrubbed: bool = False) -> Holding:
    return Holding(
        ip=ip,
        namespace=pod.namespace,
        name=pod.name,
        container_id="" if scrubbed else pod.container_id,
        ifname="" if scrubbed else pod.ifname,
    )


def view(pods: dict[PodRef, IPv4Address], **changes: object) -> NodeView:
    """What a healthy node shows for `pods`; `changes` replaces any part of it."""
    parts: dict[str, object] = {
        "datastore": tuple(holding(p, ip, scrubbed=True) for p, ip in pods.items()),
        "checkpoint": tuple(holding(p, ip) for p, ip in pods.items()),
        "ec2": tuple(IPv4Network(f"{ip}/32") for ip in (IP_A, IP_B, IP_X)),
        "pod_veths": frozenset(veth(p) for p in pods),
        "pod_rules": tuple((prio, ip) for ip in pods.values() for prio in (512, 1536)),
        "sandbox_addresses": {p.container_id: frozenset({ip}) for p, ip in pods.items()},
    }
    parts.update(changes)
    return NodeView(**parts)  # type: ignore[arg-type]


def test_a_healthy_node_is_clean() -> None:
    live = {A: IP_A, B: IP_B}
    assert evaluate(live=live, pending={}, view=view(live), veth_name=veth).clean


def test_a_pod_is_lost_when_any_source_forgot_it() -> None:
    live = {A: IP_A, B: IP_B}
    cases = {
        "datastore": view(live, datastore=(holding(B, IP_B, scrubbed=True),)),
        "checkpoint": view(live, checkpoint=(holding(B, IP_B),)),
        "EC2": view(live, ec2=(IPv4Network(f"{IP_B}/32"),)),
        "veth": view(live, pod_veths=frozenset({veth(B)})),
        "sandbox": view(live, sandbox_addresses={A.container_id: frozenset()}),
    }
    for where, seen in cases.items():
        verdict = evaluate(live=live, pending={}, view=seen, veth_name=veth)
        assert [f.subject.split()[0] for f in verdict.lost] == ["ns/a"], where


def test_the_datastore_giving_a_pod_another_address_is_a_loss() -> None:
    live = {A: IP_A}
    seen = view(live, datastore=(holding(A, IP_X, scrubbed=True),))
    (lost,) = evaluate(live=live, pending={}, view=seen, veth_name=veth).lost
    assert "10.0.0.7" in lost.detail and "answered 10.0.0.5" in lost.detail


def test_two_pods_answered_one_address_is_a_double_assignment() -> None:
    live = {A: IP_A, B: IP_A}
    verdict = evaluate(live=live, pending={}, view=view(live), veth_name=veth)
    assert [f.subject for f in verdict.double] == [
        "10.0.0.5",
        "10.0.0.5",
        "10.0.0.5",
    ]  # ADD, datastore, checkpoint


def test_an_address_on_two_enis_in_ec2_is_a_double_assignment() -> None:
    live = {A: IP_A}
    seen = view(live, ec2=(IPv4Network("10.0.0.0/28"), IPv4Network(f"{IP_A}/32")))
    assert [f.detail for f in evaluate(live=live, pending={}, view=seen, veth_name=veth).double] == [
        "on two ENIs in EC2"
    ]


def test_what_no_pod_holds_is_leaked_but_a_pending_release_is_not() -> None:
    live = {A: IP_A}
    gone = view({A: IP_A, B: IP_B})
    leaked = evaluate(live=live, pending={}, view=gone, veth_name=veth)
    assert [f.subject for f in leaked.leaked_addresses] == ["10.0.0.6"]
    assert [f.subject for f in leaked.leaked_veths] == ["eni-b"]
    assert [f.subject for f in leaked.leaked_rules] == ["512 10.0.0.6", "1536 10.0.0.6"]
    assert not leaked.lost and not leaked.double
    assert evaluate(live=live, pending={B: IP_B}, view=gone, veth_name=veth).clean


def test_a_pending_pod_whose_add_answer_was_lost_keeps_what_the_node_says_it_holds() -> None:
    gone = view({A: IP_A})
    assert evaluate(live={}, pending={A: None}, view=gone, veth_name=veth).clean
    assert not evaluate(live={}, pending={}, view=gone, veth_name=veth).clean
