"""`bash scripts/demo.sh --network-policy`: Kubernetes NetworkPolicy on two testbed nodes, with real packets.

Two namespaces (frontend: web-0, web-1; backend: api-0, db-0) on a node in standard mode. The connectivity
matrix (TCP port 80) is probed with real connections before and after each change, printed as a table and
judged against what the NetworkPolicy API says: no policy; a default-deny for backend's ingress; an allow
policy for the frontend to reach api-0. Then strict mode on the second node: a new pod there is denied both
ways until a policy selects it. Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from vpccni.testbed.netpol import oracle, truth
from vpccni.testbed.netpol.cluster import ClusterPod, PolicyCluster, container_ports
from vpccni.testbed.netpol.daemons import console_script
from vpccni.testbed.netpol.probe import Outcome, Proto

PORT = 80
SETTLE_S = 15.0


def _policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


DENY_BACKEND = _policy("default-deny-ingress", "backend", {"podSelector": {}, "policyTypes": ["Ingress"]})
ALLOW_API = _policy(
    "api-clients",
    "backend",
    {
        "podSelector": {"matchLabels": {"app": "api"}},
        "ingress": [
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"team": "web"}}},
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "batch"}}},
                ],
                "ports": [{"protocol": "TCP", "port": PORT}],
            }
        ],
    },
)
BATCH_EGRESS = _policy(
    "batch-to-api",
    "jobs",
    {
        "podSelector": {"matchLabels": {"app": "batch"}},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "api"}}}],
                "ports": [{"port": PORT}],
            }
        ],
    },
)
# Strict mode's own rule, which the API does not know: an unselected pod is isolated both ways.
STRICT_DEFAULT = _policy(
    "strict-default",
    "jobs",
    {"podSelector": {"matchLabels": {"app": "batch"}}, "policyTypes": ["Ingress", "Egress"]},
)


class Demo:
    def __init__(self, pc: PolicyCluster, out: TextIO) -> None:
        self.pc = pc
        self.out = out
        self.policies: list[dict[str, Any]] = []
        self.labels: dict[str, dict[str, str]] = {}
        self.failed: list[str] = []

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run_pod(self, namespace: str, name: str, app: str, node: int) -> ClusterPod:
        pod = self.pc.run_pod(namespace, name, node=node, labels={"app": app})
        self.labels[pod.label] = {"app": app}
        mode = self.pc.mode_of(node)
        self.say(f"  {pod.label:<17} {pod.ip}  on {self.pc.runners[node].node.name} ({mode} mode)")
        return pod

    def apply(self, policy: dict[str, Any], summary: str) -> None:
        meta = policy["metadata"]
        self.say(f"\n$ kubectl apply -f -   # {meta['namespace']}/{meta['name']}: {summary}")
        self.pc.apply_policy(policy)
        self.policies.append(policy)

    def expected(
        self, pods: Sequence[ClusterPod], extra: Sequence[dict[str, Any]]
    ) -> dict[tuple[str, str], bool]:
        ports = {(p["name"], p["protocol"]): p["containerPort"] for p in container_ports(self.pc.protocols)}
        known = {
            p.label: oracle.OraclePod(
                namespace=p.namespace,
                name=p.name,
                ip=str(p.ip),
                labels=self.labels[p.label],
                named_ports=ports,
            )
            for p in pods
        }
        world = oracle.World(
            pods=known, namespace_labels={"frontend": {"team": "web"}}, policies=[*self.policies, *extra]
        )
        return {
            (s.label, d.label): oracle.allowed(world, s.label, d.label, PORT, "TCP")
            for s in pods
            for d in pods
            if s is not d
        }

    def matrix(self, title: str, pods: Sequence[ClusterPod], extra: Sequence[dict[str, Any]] = ()) -> None:
        """Probe until the packets agree with the API (or SETTLE_S passes), then print and judge."""
        want = self.expected(pods, extra)
        pairs = [(s, d) for s in pods for d in pods if s is not d]
        started = time.monotonic()
        while True:
            outcomes = self.pc.probe(pairs, ports=(PORT,), protos=(Proto.TCP,), timeout_s=1.0)
            got = {(s, d): o is Outcome.CONNECTED for (s, d, _, _), o in outcomes.items()}
            if got == want or time.monotonic() - started > SETTLE_S:
                break
        verdict = "PASS" if got == want else "FAIL"
        self.say(f"\n{title}: {verdict}")
        probed = time.monotonic() - started
        self.say(f"TCP/{PORT}, each row to each column: . connects, X dropped (probed {probed:.1f} s)")
        self.say(truth.render([p.label for p in pods], want, got))
        if got != want:
            self.failed.append(title)
            self.say("[.] or [X]: what the packets did where the NetworkPolicy API says otherwise")

    def explain(self, pod: ClusterPod, peer: ClusterPod) -> None:
        """`vpccni policy` on the pod's node: why a connection passes or not."""
        cli = console_script("vpccni", "vpccni.ipamd.cli.main")
        argv = [*cli, "policy", pod.label, "--from", str(peer.ip), "--port", f"{PORT}/TCP"]
        node = self.pc.runners[pod.node].node
        done = subprocess.run(["ip", "netns", "exec", node.netns, *argv], capture_output=True, text=True)
        self.say(f"\n$ vpccni policy {pod.label} --from {peer.ip} --port {PORT}/TCP   # from {peer.label}")
        self.say(done.stdout.rstrip() or done.stderr.rstrip())


def run(out: TextIO, workdir: Path) -> int:
    started = time.monotonic()
    out.write(
        "Bringing up the testbed: EC2, IMDS, Kubernetes API, VPC datapath; 2 nodes, each running the real\n"
        "aws-k8s-agent (ipamd) and aws-network-policy-agent; the network policy controller on node1.\n"
    )
    with PolicyCluster(workdir=workdir, nodes=2, strict_nodes=[1]) as pc:
        d = Demo(pc, out)
        pc.create_namespace("frontend", {"team": "web"})
        pc.create_namespace("backend")
        pc.create_namespace("jobs")
        d.say(f"Up in {time.monotonic() - started:.1f} s. Pods, created through aws-cni as kubelet would:")
        pods = [
            d.run_pod("frontend", "web-0", "web", 0),
            d.run_pod("frontend", "web-1", "web", 0),
            d.run_pod("backend", "api-0", "api", 0),
            d.run_pod("backend", "db-0", "db", 0),
        ]
        d.matrix("1. No NetworkPolicy: every pod reaches every pod", pods)
        d.apply(DENY_BACKEND, "backend accepts nothing")
        d.matrix("2. Default deny in backend", pods)
        d.apply(ALLOW_API, "api-0 accepts the frontend namespace, and batch pods, on TCP 80")
        d.matrix("3. Allow frontend -> api", pods)
        d.explain(pods[2], pods[0])
        d.explain(pods[3], pods[0])
        d.say(
            "\nStrict mode (NETWORK_POLICY_ENFORCING_MODE=strict on node2): a new pod is denied both ways"
            "\nuntil a policy selects it, even where the other side lets it in (api-0 accepts batch pods)."
            "\nIts namespace, jobs, has no policy: in standard mode it would be open."
        )
        batch = d.run_pod("jobs", "batch-0", "batch", 1)
        world = [*pods, batch]
        d.matrix("4. A new pod on the strict node, no policy selecting it", world, [STRICT_DEFAULT])
        d.apply(BATCH_EGRESS, "batch pods may reach api pods on TCP 80")
        d.matrix("5. A policy selects it: batch-0 reaches api-0, and its ingress is open again", world)
    d.say(f"\nEverything torn down; {time.monotonic() - started:.0f} s in all.")
    if d.failed:
        d.say(f"FAILED: {', '.join(d.failed)}")
        return 1
    d.say("Every matrix agreed with the NetworkPolicy API: PASS")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo --network-policy", description=__doc__)
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the processes' logs (printed at the end)"
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if os.geteuid() != 0:
        print("the demo creates network namespaces: run it as root", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="vpccni-netpol-demo-"))
    try:
        return run(sys.stdout, workdir)
    finally:
        if args.keep_logs:
            print(f"logs: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
