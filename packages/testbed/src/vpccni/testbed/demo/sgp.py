"""`scripts/demo.sh --security-groups-for-pods`: security groups for pods end to end, for a newcomer.

Two nodes run the real aws-k8s-agent with ENABLE_POD_ENI=true; the VPC resource controller stand-in gives
each a trunk ENI. Two SecurityGroupPolicies select `db` (group sg-db: admits TCP 5432 from sg-client only)
and `client` (group sg-client); `other` is selected by none (the node's group). In `strict` mode, then in
`standard`: the pods are made through the aws-cni shim, the selected pod's branch ENI, VLAN and route table
are shown, and real connections show what the groups allow (client -> db) and block (other -> db, a PASS
when blocked). Then the pods go and the controller deletes their branch ENIs.

Exit 0 only when every check passed.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import ClientError
from vpccni.ipamd.cli.tables import render_table
from vpccni.k8sapi.names import POD_ENI_ANNOTATION
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, tcp_echo
from vpccni.testbed.demo import report
from vpccni.testbed.kube import PODS, SECURITYGROUPPOLICIES
from vpccni.testbed.noderunner import NodeRunner, Pod, build_shim
from vpccni.testbed.vpcrc import ControllerConfig

DB_PORT = 5432
MODES = ("strict", "standard")
COOLDOWN_S = 2.0  # the controller's branch ENI cool-down (60 s on EKS)


@dataclass(frozen=True, kw_only=True)
class Placed:
    runner: NodeRunner
    pod: Pod
    ip: ipaddress.IPv4Address
    result: dict[str, Any]


@dataclass(kw_only=True)
class SgpDemo:
    out: TextIO
    workdir: Path
    instance_type: str = "m5.large"
    settings: dict[str, str] = field(default_factory=dict)  # --set: aws-node variables for every agent
    cluster: Cluster | None = None
    runners: list[NodeRunner] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def check(self, ok: bool, what: str) -> None:
        self.say(f"  {'PASS' if ok else 'FAIL'}  {what}")
        if not ok:
            self.failures.append(what)

    # ---- steps
    def bring_up(self) -> None:
        self.say(
            "Bringing up the testbed: EC2 (moto + fidelity layer), the VPC datapath (VLAN trunks, security "
            "groups on packets), the API server, and the VPC resource controller stand-in; "
            f"2 x {self.instance_type}"
        )
        self.cluster = Cluster(
            ClusterConfig(vpc_resource_controller=ControllerConfig(cooldown_s=COOLDOWN_S, resync_s=2))
        ).start()
        shim = build_shim(self.workdir / "opt-cni-bin")
        self.say(
            f"Built the standalone aws-cni (it brings its own interpreter): {shim} -> {os.readlink(shim)}"
        )
        for _ in range(2):
            node = self.cluster.add_node(instance_type=self.instance_type)
            runner = NodeRunner(node=node, workdir=self.workdir / node.name, shim=shim, env=self.settings)
            self.runners.append(runner)
            self.say(
                f"  {node.name}: {node.instance.instance_id} {node.instance.primary_ip} in netns {node.netns}"
            )
        self._make_groups()

    def _make_groups(self) -> None:
        assert self.cluster is not None and self.cluster.kube is not None
        ec2 = self.cluster.cloud.ec2_client()
        vpc = self.cluster.cloud.vpc_id
        for name in ("db", "client"):
            self.groups[name] = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)[
                "GroupId"
            ]
        ec2.authorize_security_group_ingress(
            GroupId=self.groups["db"],
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": DB_PORT, "ToPort": DB_PORT,
                 "UserIdGroupPairs": [{"GroupId": self.groups["client"]}]}
            ],
        )  # fmt: skip
        self.say(report.heading("Security groups and SecurityGroupPolicies"))
        self.say(f"  {self.groups['db']} (db): ingress TCP {DB_PORT} from members of {self.groups['client']}")
        self.say(f"  {self.groups['client']} (client): no ingress; both send anywhere")
        for name in ("db", "client"):
            self.cluster.kube.store.create(
                SECURITYGROUPPOLICIES,
                {
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {
                        "podSelector": {"matchLabels": {"app": name}},
                        "securityGroups": {"groupIds": [self.groups[name]]},
                    },
                },
            )
            self.say(f"  SecurityGroupPolicy default/{name}: pods labelled app={name} -> {self.groups[name]}")

    def start_agents(self, mode: str) -> None:
        assert self.cluster is not None
        for runner in self.runners:
            runner.extra_env.update(
                {
                    "ENABLE_POD_ENI": "true",
                    "POD_SECURITY_GROUP_ENFORCING_MODE": mode,
                    "VPCCNI_POD_ENI_WAIT": "10",
                }
            )
            runner.start()
        controller = self.cluster.vpcrc
        assert controller is not None
        for runner in self.runners:
            trunk = _wait(functools.partial(controller.trunk_of, runner.node.k8s_node_name))
            if trunk is None or not _wait(functools.partial(_has_trunk, runner)):
                raise RuntimeError(
                    f"{runner.node.name} has no trunk ENI after 30 s (see {runner.log_file}): the controller "
                    "attaches one once ipamd lists SecurityGroupsForPods in the node's CNINode"
                )
            self.say(
                f"  {runner.node.name}: aws-k8s-agent pid {runner.pid} ({mode}); "
                "CNINode lists SecurityGroupsForPods; "
                f"trunk {trunk.eni_id} attached by the controller (up to {trunk.limit} branch ENIs)"
            )

    def run_mode(self, mode: str) -> None:
        assert self.cluster is not None
        self.say(report.heading(f"POD_SECURITY_GROUP_ENFORCING_MODE={mode}"))
        self.start_agents(mode)
        node1, node2 = self.runners
        db = self._add(node1, f"db-{mode}", "db")
        client = self._add(node2, f"client-{mode}", "client")
        other = self._add(node2, f"other-{mode}", "other")
        placed = [p for p in (db, client, other) if p is not None]
        self._show(placed)
        if db is not None:
            self._show_wiring(db)
            with EchoServer(netns=db.pod.netns, ip=db.ip, port=DB_PORT):
                if client is not None:
                    seen = tcp_echo(client.pod.netns, db.ip, DB_PORT, timeout=3)
                    self.check(
                        seen == str(client.ip),
                        f"client ({client.ip}, sg-client) -> db {db.ip}:{DB_PORT}: allowed by sg-db"
                        + ("" if seen else " -- but it was blocked"),
                    )
                if other is not None:
                    seen = tcp_echo(other.pod.netns, db.ip, DB_PORT, timeout=1.5)
                    self.check(
                        seen is None,
                        f"other ({other.ip}, the node's group) -> db {db.ip}:{DB_PORT}: blocked by sg-db"
                        + (" -- but it connected" if seen else ""),
                    )
        branches = self._branch_enis(placed)
        self.say("  deleting the pods (CNI DEL, then the Pod objects)")
        for p in placed:
            outcome = p.runner.cni("DEL", p.pod, prev_result=p.result)
            self.check(outcome.ok, f"DEL {p.pod.name}" + ("" if outcome.ok else f": {outcome.error}"))
            p.runner.remove_pod(p.pod)
            self.cluster.delete_pod("default", p.pod.name)
        left = [link for r in self.runners for link in _vlan_links(r.node)]
        self.check(not left, f"no VLAN link left on the nodes{'' if not left else f' ({left})'}")
        gone = _wait(lambda: all(not self._exists(e) for e in branches), timeout_s=COOLDOWN_S + 20)
        self.check(
            bool(gone), f"the controller deleted the branch ENIs {', '.join(branches)} after their cool-down"
        )
        for runner in self.runners:
            runner.stop()

    def _add(self, runner: NodeRunner, name: str, app: str) -> Placed | None:
        assert self.cluster is not None
        obj = self.cluster.create_pod(runner.node, namespace="default", name=name, labels={"app": app})
        pod = runner.create_pod(namespace="default", name=name, uid=obj["metadata"]["uid"])
        outcome = runner.cni("ADD", pod)
        self.check(
            outcome.ok, f"ADD {name} on {runner.node.name}" + ("" if outcome.ok else f": {outcome.error}")
        )
        if not outcome.ok:
            return None
        ip = ipaddress.IPv4Interface(outcome.document["ips"][0]["address"]).ip
        return Placed(runner=runner, pod=pod, ip=ip, result=outcome.document)

    def _show(self, placed: list[Placed]) -> None:
        assert self.cluster is not None and self.cluster.kube is not None
        rows = []
        for p in placed:
            view = next(v for v in p.runner.introspect("/v1/pods") if v["name"] == p.pod.name)
            vlan = int(view.get("vlanId") or 0)
            rows.append(
                (p.pod.name, p.runner.node.name, str(p.ip), view["eniId"], str(vlan or "-"),
                 str(vlan + 100) if vlan else str(view["routeTableId"]).replace("254", "main"),
                 "branch ENI" if vlan else "node ENI")
            )  # fmt: skip
        self.out.write(render_table(("POD", "NODE", "IP", "ENI", "VLAN", "ROUTE TABLE", "KIND"), rows))

    def _show_wiring(self, db: Placed) -> None:
        vlan = int(next(v for v in db.runner.introspect("/v1/pods") if v["name"] == db.pod.name)["vlanId"])
        node = db.runner.node.netns
        self.say(f"  on {db.runner.node.name} (ip netns exec {node} ...):")
        link = ns.exec_in_netns(node, ["ip", "-d", "-o", "link", "show", f"vlan.eth.{vlan}"]).split("\\")[0]
        self.say(f"    ip link:  {link.strip()}")
        for line in ns.exec_in_netns(node, ["ip", "rule"]).splitlines():
            if line.startswith("10:") or str(db.ip) in line:
                self.say(f"    ip rule:  {line.strip()}")
        for line in ns.exec_in_netns(node, ["ip", "route", "show", "table", str(vlan + 100)]).splitlines():
            self.say(f"    table {vlan + 100}: {line.strip()}")

    def _branch_enis(self, placed: list[Placed]) -> list[str]:
        """The branch ENIs of the pods, from the annotation the controller wrote."""
        assert self.cluster is not None and self.cluster.kube is not None
        found = []
        for p in placed:
            annotations = self.cluster.kube.store.get(PODS, p.pod.name, "default")["metadata"].get(
                "annotations"
            )
            if text := (annotations or {}).get(POD_ENI_ANNOTATION):
                found.append(str(json.loads(text)[0]["eniId"]))
        return found

    def _exists(self, eni_id: str) -> bool:
        assert self.cluster is not None
        try:
            self.cluster.cloud.ec2_client().describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        except ClientError:
            return False
        return True

    def tear_down(self) -> None:
        for runner in self.runners:
            with contextlib.suppress(Exception):
                runner.close()
        if self.cluster is not None:
            self.cluster.stop()

    def run(self) -> int:
        started = time.monotonic()
        self.bring_up()
        for mode in MODES:
            self.run_mode(mode)
        self.say(report.result(self.failures, time.monotonic() - started))
        return 1 if self.failures else 0


def _has_trunk(runner: NodeRunner) -> bool:
    return runner.metric("vpccni_trunk_eni_attached") == 1


def _vlan_links(node: Node) -> list[str]:
    return sorted(name for name in node.network.links() if name.startswith("vlan.eth."))


def _wait(check: Callable[[], Any], *, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
