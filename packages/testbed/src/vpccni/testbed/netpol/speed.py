"""The network policy speed benchmark: one m5.4xlarge testbed node with 100 pods in 5 namespaces and 500
policy rules (50 NetworkPolicies of 10 ingress rules: pod selectors and ports, some ipBlocks), the real
ipamd, agent and controller.

- `policy_to_enforced_p50_ms` / `_p99_ms`: a NetworkPolicy is changed in the API server (a new ipBlock peer)
  and the clock stops when the node's agent has the new rule in its kernel table (polled through the
  agent's introspection, which reflects a table only after `nft` has committed it). End to end: the API
  server's watch, the controller's PolicyEndpoint write, the agent's watch, recompute and table write.
- `connect_rate_ratio_1000_rules`: new TCP connections per second from one pod to another whose ingress
  policy has 1,000 rules, over the same with no policy; interleaved rounds, medians.
- `netpol_agent_rss_mib`: the agent's resident memory at that load.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vpccni.testbed.bench import docs as bench_docs
from vpccni.testbed.bench.machine import describe
from vpccni.testbed.childproc import stop_child
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.netpol import daemons
from vpccni.testbed.netpol.cluster import ClusterPod, PolicyCluster

log = logging.getLogger(__name__)

RESULT_KEYS = (
    "policy_to_enforced_p50_ms",
    "policy_to_enforced_p99_ms",
    "connect_rate_ratio_1000_rules",
    "netpol_agent_rss_mib",
)
NAMESPACES = tuple(f"bench-{i}" for i in range(5))
APPS = 10
PODS = 100
POLICIES = 50
RULES_PER_POLICY = 10
PROBE_NET = ipaddress.ip_network("198.51.100.0/24")  # TEST-NET-2: never a pod


def _policy(i: int) -> dict[str, Any]:
    """Policy i: selects app-(i % 10) in its namespace; 10 ingress rules on their own ports."""
    namespace = NAMESPACES[i % len(NAMESPACES)]
    rules = []
    for j in range(RULES_PER_POLICY):
        port = [{"port": 8000 + j, "protocol": "TCP"}]
        if j % 5 == 4:
            peer: dict[str, Any] = {
                "ipBlock": {"cidr": f"10.{100 + i}.{j}.0/24", "except": [f"10.{100 + i}.{j}.128/25"]}
            }
        elif j % 5 == 3:
            peer = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": f"app-{(i + j) % APPS}"}}}
        else:
            peer = {"podSelector": {"matchLabels": {"app": f"app-{(i + j) % APPS}"}}}
        rules.append({"from": [peer], "ports": port})
    return {
        "metadata": {"name": f"policy-{i:02d}", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": f"app-{i % APPS}"}},
            "ingress": rules,
            "policyTypes": ["Ingress"],
        },
    }


def _probe_policy(n: int) -> dict[str, Any]:
    """The policy the latency samples change: pod app-0 of bench-0 accepts 198.51.100.<n> on TCP 9000."""
    return {
        "metadata": {"name": "probe", "namespace": NAMESPACES[0]},
        "spec": {
            "podSelector": {"matchLabels": {"app": "app-0"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": f"{PROBE_NET[n]}/32"}}], "ports": [{"port": 9000}]}],
        },
    }


def _rules_1000(client: ClusterPod) -> dict[str, Any]:
    """1,000 ingress rules on pod conn/server: 999 others' /32s on their own ports, and the client's."""
    rules = [
        {
            "from": [{"ipBlock": {"cidr": f"172.16.{i // 250}.{i % 250 + 1}/32"}}],
            "ports": [{"port": 1000 + i}],
        }
        for i in range(999)
    ]
    rules.append({"from": [{"ipBlock": {"cidr": f"{client.ip}/32"}}], "ports": [{"port": CONNECT_PORT}]})
    return {
        "metadata": {"name": "rules-1000", "namespace": "conn"},
        "spec": {"podSelector": {"matchLabels": {"pod": "server"}}, "ingress": rules},
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _explain_allows(pc: PolicyCluster, target: ClusterPod, peer: str) -> bool:
    """Whether the agent's table lets `peer` in to `target` on TCP 9000 by a rule naming exactly it (an open,
    not yet isolated pod lets it in too, which is not what is being waited for)."""
    doc = pc.agents[0].get_json(
        daemons.AGENT_INTROSPECTION,
        f"/v1/explain?namespace={target.namespace}&name={target.name}&direction=ingress&peer={peer}"
        "&protocol=TCP&port=9000",
    )
    return bool(doc.get("allowed")) and (doc.get("rule") or {}).get("cidr") == peer


def quiesce(pc: PolicyCluster, *, still_s: float = 1.0, timeout_s: float = 60.0) -> None:
    """Wait until the agent has written no table for `still_s`: the set-up's changes are all in."""
    last, since = -1.0, time.monotonic()
    deadline = since + timeout_s
    while time.monotonic() < deadline:
        writes = _agent_metric(pc, "vpccni_netpol_table_writes_total")
        if writes != last:
            last, since = writes, time.monotonic()
        elif time.monotonic() - since >= still_s:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the agent was still writing its table {timeout_s:.0f} s after the set-up")


def policy_to_enforced(pc: PolicyCluster, target: ClusterPod, samples: int) -> list[float]:
    """Milliseconds from each NetworkPolicy update to the agent having it in the kernel."""
    out = []
    for n in range(1, samples + 1):
        host = n % 250 + 1
        peer = str(PROBE_NET[host])

        def enforced(peer: str = peer) -> bool:
            return _explain_allows(pc, target, peer)

        started = time.monotonic()
        pc.apply_policy(_probe_policy(host))
        if not pc.wait_for(enforced, timeout_s=10, interval_s=0.002):
            raise RuntimeError(f"the probe policy change {n} was not enforced within 10 s")
        out.append((time.monotonic() - started) * 1000)
    return out


CONNECT_PORT = 8080
# Both ends are processes of their own, so the measurement does not share an interpreter lock with the
# harness: the server accepts and closes, the client connects and resets (no TIME_WAIT piles up).
_ACCEPTOR = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port}))
s.listen(4096)
print("ready", flush=True)
while True:
    s.accept()[0].close()
"""
_CONNECTOR = """
import socket, struct, sys, time
address, seconds = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3])
linger = struct.pack("ii", 1, 0)
count, stalls, started = 0, 0, time.monotonic()
deadline = started + seconds
while time.monotonic() < deadline:
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    c.settimeout(2)
    try:
        c.connect(address)
        count += 1
    except OSError:
        stalls += 1
    c.close()
print(count / (time.monotonic() - started), stalls)
"""


class Acceptor:
    """A process in the server pod's namespace that accepts connections on `CONNECT_PORT` and closes them."""

    def __init__(self, pod: ClusterPod) -> None:
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", pod.netns, sys.executable, "-c", _ACCEPTOR.format(port=CONNECT_PORT)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the connection-rate acceptor did not start")

    def close(self) -> None:
        stop_child(self._proc, signal.SIGTERM, timeout_s=5)  # type: ignore[arg-type]


def connect_rate(client: ClusterPod, server: ClusterPod, *, seconds: float) -> tuple[float, int]:
    """New TCP connections per second, one after another, from `client` to the `Acceptor` on `server`, and
    how many connects did not complete within 2 s (on a loaded machine the acceptor can fall behind)."""
    argv = [sys.executable, "-c", _CONNECTOR, str(server.ip), str(CONNECT_PORT), str(seconds)]
    rate, stalls = ns.exec_in_netns(client.netns, argv).split()
    return float(rate), int(stalls)


def run(*, workdir: Path, quick: bool = False, out: Any = sys.stdout) -> dict[str, Any]:
    samples = 30 if quick else 100
    rounds = 3 if quick else 7
    started = time.monotonic()

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    pool = {"WARM_IP_TARGET": "10", "MINIMUM_IP_TARGET": "110"}
    with PolicyCluster(workdir=workdir, nodes=1, instance_type="m5.4xlarge", agent_env=pool) as pc:
        for namespace in (*NAMESPACES, "conn"):
            pc.create_namespace(namespace)
        t = time.monotonic()
        pods = [
            pc.run_pod(
                NAMESPACES[i % len(NAMESPACES)], f"pod-{i:03d}", node=0, labels={"app": f"app-{i % APPS}"}
            )
            for i in range(PODS)
        ]
        say(f"{len(pods)} pods in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        for i in range(POLICIES):
            pc.apply_policy(_policy(i))
        pc.apply_policy(_probe_policy(1))
        target = pods[0]  # bench-0, app-0
        if not pc.wait_for(lambda: _explain_allows(pc, target, str(PROBE_NET[1])), timeout_s=60):
            raise RuntimeError("the benchmark's policies were not enforced within 60 s")
        quiesce(pc)
        rules = POLICIES * RULES_PER_POLICY
        say(f"{POLICIES} policies, {rules} rules, in force after {time.monotonic() - t:.1f} s")
        latencies = policy_to_enforced(pc, target, samples)
        p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
        say(f"policy to enforced: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        rss = pc.agents[0].rss_mib()
        elements = _agent_metric(pc, "vpccni_netpol_set_elements")
        # Connection rate: a pod with no policy, then the same pod behind 1,000 rules, interleaved.
        client = pc.run_pod("conn", "client", node=0, labels={"pod": "client"})
        server = pc.run_pod("conn", "server", node=0, labels={"pod": "server"})
        plain: list[float] = []
        guarded: list[float] = []
        stalls = 0
        seconds = 1.0 if quick else 2.0
        acceptor = Acceptor(server)
        for _ in range(rounds):  # each measurement once the agent is idle: the rules, not its work, are timed
            quiesce(pc, still_s=0.5)
            rate, stalled = connect_rate(client, server, seconds=seconds)
            plain.append(rate)
            stalls += stalled
            pc.apply_policy(_rules_1000(client))
            if not pc.wait_for(lambda: "conn/rules-1000" in pc.policies_in_force().get("conn/server", set()),
                               timeout_s=30):  # fmt: skip
                raise RuntimeError("the 1,000-rule policy was not enforced within 30 s")
            quiesce(pc, still_s=0.5)
            rate, stalled = connect_rate(client, server, seconds=seconds)
            guarded.append(rate)
            stalls += stalled
            pc.delete_policy("conn", "rules-1000")
            if not pc.wait_for(lambda: not pc.policies_in_force().get("conn/server"), timeout_s=30):
                raise RuntimeError("the 1,000-rule policy was still enforced 30 s after it was deleted")
        acceptor.close()
        if not statistics.median(plain):
            raise RuntimeError(f"no connection completed to the open pod ({stalls} stalled); see the logs")
        ratio = statistics.median(guarded) / statistics.median(plain)
        say(f"connections/s: {statistics.median(plain):.0f} open, {statistics.median(guarded):.0f} guarded")
        metrics = pc.agents[0].get_text("127.0.0.1:8162", "/metrics")
    writes = _metric(metrics, "vpccni_netpol_table_write_seconds_count")
    write_s = _metric(metrics, "vpccni_netpol_table_write_seconds_sum")
    return {
        "policy_to_enforced_p50_ms": round(p50, 1),
        "policy_to_enforced_p99_ms": round(p99, 1),
        "connect_rate_ratio_1000_rules": round(ratio, 3),
        "netpol_agent_rss_mib": round(rss, 1) if rss is not None else None,
        "speed_detail": {
            "pods": PODS,
            "policies": POLICIES,
            "rules": POLICIES * RULES_PER_POLICY,
            "table_set_elements": int(elements),
            "policy_to_enforced_samples": len(latencies),
            "policy_to_enforced_mean_ms": round(statistics.fmean(latencies), 1),
            "table_writes": writes,
            "table_write_mean_ms": round(write_s / writes * 1000, 1) if writes else None,
            "connections_per_s_open": round(statistics.median(plain)),
            "connections_per_s_1000_rules": round(statistics.median(guarded)),
            "connect_rounds": rounds,
            "connects_stalled_2s": stalls,
            "connect_round_seconds": seconds,
        },
        "speed_run": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quick": quick,
            "seconds": round(time.monotonic() - started, 1),
            "instance_type": "m5.4xlarge",
            "machine": describe(),
        },
    }


def _agent_metric(pc: PolicyCluster, name: str) -> float:
    return _metric(pc.agents[0].get_text("127.0.0.1:8162", "/metrics"), name)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def write_docs(path: Path, results: Path) -> None:
    """Re-render `docs/benchmarks.md` with these network policy figures (`results`, already written)."""
    bench_docs.write_page(path, results_dir=results.parent)
