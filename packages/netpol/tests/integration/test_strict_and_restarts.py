"""Strict mode through the real CNI path, and restarts of the agent and the controller, on the testbed (real
ipamd, agent, controller, API server; real packets)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vpccni.ipamd.cli.introspect import pod_rows
from vpccni.networkutils.names import attachment_veth_name, host_veth_name
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.netpol import daemons
from vpccni.testbed.netpol.cluster import ClusterPod, PolicyCluster
from vpccni.testbed.netpol.probe import Outcome, Proto

TCP80 = {"ports": (80,), "protos": (Proto.TCP,)}
STANDBY_HEALTH = "127.0.0.1:8091"  # a second controller replica on the same node
LEASE = "amazon-network-policy-controller-k8s"


def connects(pc: PolicyCluster, src: ClusterPod, dst: ClusterPod) -> bool:
    [outcome] = pc.probe([(src, dst)], **TCP80).values()  # type: ignore[arg-type]
    return outcome is Outcome.CONNECTED


def open_all(namespace: str) -> dict[str, object]:
    return {
        "metadata": {"name": "open", "namespace": namespace},
        "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}], "policyTypes": ["Ingress", "Egress"]},
    }


def wait_until(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyCluster]:
    workdir: Path = tmp_path_factory.mktemp("netpol-strict")
    with PolicyCluster(workdir=workdir, nodes=2, mode="strict") as pc:
        for namespace in ("s", "t"):
            pc.create_namespace(namespace)
        yield pc


def test_a_new_pod_is_denied_both_ways_until_a_policy_selects_it(strict: PolicyCluster) -> None:
    pc = strict
    a, b = pc.run_pod("s", "a", node=0), pc.run_pod("s", "b", node=1)
    # The ADD returned only once the agent had the pods: nothing gets through, right away.
    assert not connects(pc, a, b) and not connects(pc, b, a)
    pc.apply_policy(open_all("s"))
    assert wait_until(lambda: connects(pc, a, b) and connects(pc, b, a))
    pc.delete_policy("s", "open")
    assert wait_until(lambda: not connects(pc, a, b))


def test_with_the_agent_down_strict_adds_fail_with_11_and_leave_nothing(strict: PolicyCluster) -> None:
    pc = strict
    runner = pc.runners[0]
    manifest = {
        "metadata": {"name": "late", "namespace": "s"},
        "spec": {"nodeName": runner.node.k8s_node_name},
    }
    pc.agents[0].stop()
    try:
        pc.store.create("pods", manifest)
        sandbox = runner.create_pod(namespace="s", name="late")
        outcome = runner.add(sandbox)
        assert not outcome.ok and outcome.document.get("code") == 11
        message = str(outcome.document.get("msg", ""))
        assert "npa.sock" in message and "strict" in message and "s/late" in message
        assert "late" not in {row.name for row in pod_rows(runner.introspect("/v1/enis"))}
        assert host_veth_name("s", "late") not in ns.exec_in_netns(runner.node.netns, ["ip", "-o", "link"])
        assert runner.delete(sandbox).ok
        runner.remove_pod(sandbox)
        pc.store.delete("pods", "late", "s")
    finally:
        pc.restart_agent(0)
    # The agent is back: the same pod is admitted, denied until a policy selects it.
    late, other = pc.run_pod("s", "late", node=0), pc.run_pod("s", "other", node=1)
    assert not connects(pc, other, late) and not connects(pc, late, other)


def _established(client: ClusterPod, server: ClusterPod, port: int) -> tuple[socket.socket, socket.socket]:
    listener = ns.listen_tcp(server.netns, "0.0.0.0", port)
    conn = ns.connect_tcp(client.netns, str(server.ip), port, timeout=3)
    accepted, _ = listener.accept()
    listener.close()
    accepted.settimeout(3)
    conn.settimeout(3)
    return conn, accepted


def test_agent_restart_keeps_denials_and_established_connections(strict: PolicyCluster) -> None:
    pc = strict
    c, d, e = pc.run_pod("t", "c", node=0), pc.run_pod("t", "d", node=0), pc.run_pod("t", "e", node=1)
    pc.apply_policy(
        {
            "metadata": {"name": "c-d", "namespace": "t"},
            "spec": {
                "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["c", "d"]}]},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "d"}}}]}],
                "policyTypes": ["Ingress", "Egress"],
            },
        }
    )
    assert wait_until(lambda: connects(pc, c, d))
    conn, accepted = _established(c, d, 8080)
    with conn, accepted:
        pc.agents[0].stop()
        # Agent gone: the kernel table stays; still-strict e and the policy's denials hold.
        assert not connects(pc, e, c) and not connects(pc, d, c) and connects(pc, c, d)
        conn.sendall(b"during")
        assert accepted.recv(16) == b"during"
        pc.restart_agent(0)
        assert not connects(pc, e, c) and not connects(pc, d, c) and connects(pc, c, d)
        accepted.sendall(b"after")
        assert conn.recv(16) == b"after"


def test_a_second_sandbox_under_an_attachment_name_is_enforced_too(strict: PolicyCluster) -> None:
    pc = strict
    target = pc.run_pod("t", "twin", node=1)
    client = pc.pods.get("t/e") or pc.run_pod("t", "e", node=1)
    pc.apply_policy(open_all("t"))
    assert wait_until(lambda: connects(pc, client, target))
    runner = pc.runners[1]
    second = runner.create_pod(namespace="t", name="twin")  # a new sandbox while the first lives
    outcome = runner.add(second)
    assert outcome.ok, outcome.error
    veth = attachment_veth_name(second.container_id, "eth0")
    assert veth in ns.exec_in_netns(runner.node.netns, ["ip", "-o", "link"])
    # The pod object shows the second sandbox's address from now on; the agent finds its veth by route.
    address = outcome.document["ips"][0]["address"].split("/")[0]
    pc.store.patch("pods", "twin", {"status": {"podIP": address, "podIPs": [{"ip": address}]}}, namespace="t")

    def table_has_it() -> bool:
        listing = pc.agents[1].get_json("127.0.0.1:61680", "/v1/ruleset")["table"]
        return f'"{veth}"' in listing

    assert wait_until(table_has_it)
    runner.delete(second)
    runner.remove_pod(second)


def test_controller_restart_catches_up_with_what_changed_while_it_was_down(strict: PolicyCluster) -> None:
    pc = strict
    assert pc.controller is not None

    def endpoints_of_s_open() -> list[str]:
        return [
            pe["metadata"]["name"]
            for pe in pc.policy_endpoints()
            if pe["spec"]["policyRef"] == {"name": "open", "namespace": "s"}
        ]

    pc.apply_policy(open_all("s"))
    assert wait_until(lambda: bool(endpoints_of_s_open()))
    pc.controller.stop()
    pc.delete_policy("s", "open")
    time.sleep(0.5)
    assert endpoints_of_s_open()  # nobody cleans up while the controller is down (no garbage collector here)
    pc.controller.start()
    assert wait_until(lambda: not endpoints_of_s_open())


def test_a_standby_controller_takes_over_when_the_leader_is_killed(
    strict: PolicyCluster, tmp_path: Path
) -> None:
    pc = strict
    assert pc.controller is not None

    def lease() -> dict[str, object]:
        spec: dict[str, object] = pc.store.get("leases", LEASE, "kube-system")["spec"]
        return spec

    def endpoints_of(name: str) -> bool:
        ref = {"name": name, "namespace": "t"}
        return any(pe["spec"]["policyRef"] == ref for pe in pc.policy_endpoints())

    leader = lease()["holderIdentity"]
    after: dict[str, object] = {}
    node = pc.runners[0].node
    standby = daemons.controller(node, workdir=tmp_path / "standby", health=STANDBY_HEALTH).start()
    try:
        standby.wait_healthy(STANDBY_HEALTH)  # ready (caches synced) while standing by
        pc.apply_policy({**open_all("t"), "metadata": {"name": "while-led", "namespace": "t"}})
        assert wait_until(lambda: endpoints_of("while-led"))
        assert lease()["holderIdentity"] == leader  # the leader wrote; the standby still waits
        assert "waiting for the Lease" in standby.tail(200) and "holds the lease" not in standby.tail(200)

        pc.controller.stop(signal.SIGKILL)  # no release: the standby must wait out the lease
        killed = time.monotonic()
        pc.apply_policy({**open_all("t"), "metadata": {"name": "after-kill", "namespace": "t"}})
        assert wait_until(lambda: endpoints_of("after-kill"), timeout_s=45)
        took = time.monotonic() - killed
        assert took >= 10, f"the standby wrote {took:.1f} s after the kill, before the lease could expire"
        after = lease()
        assert after["holderIdentity"] not in (leader, "") and int(str(after["leaseTransitions"])) >= 1
    finally:
        standby.stop()  # SIGTERM: releases the lease, so the restarted replica takes it at once
        pc.controller.start()
        pc.controller.wait_healthy(daemons.CONTROLLER_HEALTH)
        for name in ("while-led", "after-kill"):
            pc.delete_policy("t", name)
    assert wait_until(lambda: lease()["holderIdentity"] not in ("", after["holderIdentity"]), timeout_s=15)
