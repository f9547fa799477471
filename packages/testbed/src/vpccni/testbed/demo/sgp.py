"""`scripts/demo.sh --security-groups-for-pods`: security groups for pods end to end, for a newcomer.

Two nodes run the real aws-k8s-agent with ENABLE_POD_ENI=true; the VPC resource controller stand-in gives
each a trunk ENI. Two SecurityGroupPolicies select `db` (group sg-db: admits TCP 5432 from sg-client only)
and `client` (group sg-client); `other` is selected by none (the node's group). In `strict` mode, then in
`standard`: the pods are made through the aws-cni shim, the selected pod's branch ENI, VLAN and route table
are shown, and real connections show what the groups allow (client -> db) and block (other -> db, a PASS
when blocked). Then the pods go and the controller deletes their branch ENIs.

With `--ipv6` the cluster is IPv6 (a dual-stack VPC whose subnets assign IPv6 on creation): each selected pod
gets its branch ENI's IPv6 address, routed through EC2's router at fe80:ec2::1 on its VLAN; pods are made
through the conflist's chain (aws-cni, then egress-cni for their IPv4 egress), and the same checks are IPv6
connections (the VPC enforces the groups on IPv6 packets as on IPv4: a group reference admits its members'
IPv6 addresses). Then the VPC host's connection to db (only the branch ENI can take it in) is blocked until
sg-db admits the host's IPv6 /128 (an `Ipv6Ranges` rule), and db's IPv4 egress through egress-cni is shown.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import ClientError
from vpccni.ipamd.cli.tables import render_table
from vpccni.k8sapi.names import POD_ENI_ANNOTATION
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.probes import EchoServer, tcp_echo
from vpccni.testbed.demo import report
from vpccni.testbed.kube import PODS
from vpccni.testbed.modes import IPV6_CLUSTER_ENV, dual_stack
from vpccni.testbed.noderunner import NodeRunner, Pod, build_shim
from vpccni.testbed.vpcrc import ControllerConfig

DB_PORT = 5432
MODES = ("strict", "standard")
COOLDOWN_S = 2.0  # the controller's branch ENI cool-down (60 s on EKS)


@dataclass(frozen=True, kw_only=True)
class Placed:
    runner: NodeRunner
    pod: Pod
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address  # the pod's, of the cluster's family
    result: dict[str, Any]


@dataclass(kw_only=True)
class SgpDemo:
    out: TextIO
    workdir: Path
    instance_type: str = "m5.large"
    settings: dict[str, str] = field(default_factory=dict)  # --set: aws-node variables for every agent
    ipv6: bool = False  # --ipv6: an IPv6 cluster
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
            "groups on IPv4 and IPv6 packets), the API server, and the VPC resource controller stand-in; "
            f"2 x {self.instance_type}" + ("; a dual-stack VPC, an IPv6 cluster" if self.ipv6 else "")
        )
        config = ClusterConfig(vpc_resource_controller=ControllerConfig(cooldown_s=COOLDOWN_S, resync_s=2))
        self.cluster = Cluster(replace(config, cloud=dual_stack()) if self.ipv6 else config).start()
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
        assert self.cluster is not None
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
        self.say(
            f"  {self.groups['client']} (client): no ingress; both send anywhere"
            + (
                " (0.0.0.0/0 and ::/0, as EC2 makes new groups in a VPC with an IPv6 block)"
                if self.ipv6
                else ""
            )
        )
        for name in ("db", "client"):
            self.cluster.create_security_group_policy(
                name, labels={"app": name}, group_ids=[self.groups[name]]
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
                    **(IPV6_CLUSTER_ENV if self.ipv6 else {}),
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
                    self._check_flow(
                        client.pod.netns, f"client ({client.ip}, sg-client)", client.ip, db, allowed=True
                    )
                if other is not None:
                    self._check_flow(
                        other.pod.netns, f"other ({other.ip}, the node's group)", other.ip, db, allowed=False
                    )
                if self.ipv6:
                    self._check_ipv6(db)
        branches = self._branch_enis(placed)
        self.say("  deleting the pods (CNI DEL, then the Pod objects)")
        for p in placed:
            outcome = (
                p.runner.delete(p.pod) if self.ipv6 else p.runner.cni("DEL", p.pod, prev_result=p.result)
            )
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
        # An IPv6 cluster's conflist chains egress-cni (the pods' IPv4 egress) after aws-cni.
        outcome = runner.add(pod) if self.ipv6 else runner.cni("ADD", pod)
        self.check(
            outcome.ok, f"ADD {name} on {runner.node.name}" + ("" if outcome.ok else f": {outcome.error}")
        )
        if not outcome.ok:
            return None
        version = "6" if self.ipv6 else "4"
        (address,) = [i["address"] for i in outcome.document["ips"] if i.get("version", "4") == version]
        ip = ipaddress.ip_interface(address).ip
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
        family = ["-6"] if self.ipv6 else []
        for line in ns.exec_in_netns(node, ["ip", *family, "rule"]).splitlines():
            if line.startswith("10:") or str(db.ip) in line:
                self.say(f"    ip {' '.join([*family, 'rule'])}:  {line.strip()}")
        table = ns.exec_in_netns(node, ["ip", *family, "route", "show", "table", str(vlan + 100)])
        for line in table.splitlines():
            self.say(f"    table {vlan + 100}: {line.strip()}")
        if self.ipv6:
            self.check(
                "default via fe80:ec2::1 dev vlan.eth." in table,
                f"table {vlan + 100} routes through EC2's router fe80:ec2::1 on the VLAN",
            )

    def _check_ipv6(self, db: Placed) -> None:
        """An IPv6 cluster's extra checks: the address is the branch ENI's in EC2; the VPC host's connection
        to db (only its branch ENI can take that in) is blocked until sg-db admits the host's /128, then the
        rule goes again (the next mode starts alike); and db has IPv4 egress through egress-cni."""
        assert self.cluster is not None
        annotation = self._annotation(db.pod.name)
        eni = self.cluster.cloud.ec2_client().describe_network_interfaces(
            NetworkInterfaceIds=[annotation["eniId"]]
        )["NetworkInterfaces"][0]
        owned = [a["Ipv6Address"] for a in eni.get("Ipv6Addresses") or []]
        self.check(
            owned == [str(db.ip)] and annotation.get("ipv6Addr") == str(db.ip),
            f"db {db.ip} is branch ENI {annotation['eniId']}'s IPv6 address (EC2: {owned})",
        )
        router, host = self.cluster.datapath.router, self.cluster.vpc_host_ip6
        assert host is not None  # a dual-stack VPC
        self._check_flow(router.vpc_host_netns, f"the VPC host ({host})", host, db, allowed=False)
        ec2 = self.cluster.cloud.ec2_client()
        from_host = [{"IpProtocol": "tcp", "FromPort": DB_PORT, "ToPort": DB_PORT,
                      "Ipv6Ranges": [{"CidrIpv6": f"{host}/128"}]}]  # fmt: skip
        ec2.authorize_security_group_ingress(GroupId=self.groups["db"], IpPermissions=from_host)
        self.say(f"  authorized on {self.groups['db']}: TCP {DB_PORT} from {host}/128 (Ipv6Ranges)")
        try:
            self._check_flow(router.vpc_host_netns, f"the VPC host ({host})", host, db, allowed=True)
        finally:
            ec2.revoke_security_group_ingress(GroupId=self.groups["db"], IpPermissions=from_host)
        internet = self.cluster.internet_ip
        with EchoServer(netns=router.internet_netns, ip=internet) as server:
            seen = tcp_echo(db.pod.netns, internet, server.port, timeout=3)
        self.check(seen is not None, f"db -> {internet} (IPv4 egress through egress-cni, seen as {seen})")

    def _check_flow(self, netns: str, who: str, source: object, db: Placed, *, allowed: bool) -> None:
        """A TCP connection from `netns` to db's port, which db's groups should allow (and the far end see
        `source`) or block (a PASS when nothing gets through)."""
        seen = tcp_echo(netns, db.ip, DB_PORT, timeout=3 if allowed else 1.5)
        target = f"db [{db.ip}]:{DB_PORT}" if db.ip.version == 6 else f"db {db.ip}:{DB_PORT}"
        if allowed:
            ok, outcome = (
                seen == str(source),
                "allowed by sg-db" + (f" (db saw {seen})" if seen else " -- but it was blocked"),
            )
        else:
            ok, outcome = seen is None, "blocked by sg-db" + (" -- but it connected" if seen else "")
        self.check(ok, f"{who} -> {target}: {outcome}")

    def _annotation(self, name: str) -> dict[str, Any]:
        assert self.cluster is not None and self.cluster.kube is not None
        annotations = self.cluster.kube.store.get(PODS, name, "default")["metadata"].get("annotations") or {}
        text = annotations.get(POD_ENI_ANNOTATION)
        return dict(json.loads(text)[0]) if text else {}

    def _branch_enis(self, placed: list[Placed]) -> list[str]:
        """The branch ENIs of the pods, from the annotation the controller wrote."""
        assert self.cluster is not None and self.cluster.kube is not None
        return [str(a["eniId"]) for p in placed if (a := self._annotation(p.pod.name))]

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
