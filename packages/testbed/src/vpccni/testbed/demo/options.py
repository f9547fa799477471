"""The demo's command line: its options, checked together (which flags combine), as one value."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from vpccni.testbed.demo import multinic
from vpccni.testbed.ec2.instance_types import limits_for
from vpccni.testbed.modes import IPV6_CLUSTER_ENV, V6_EGRESS_ENV


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    nodes: int = 2
    pods: int = 40
    instance_type: str = "m5.large"
    keep: bool = False
    workers: int = 8
    runtime: str = "shim"
    no_python_host: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    cluster_view: bool = False
    multi_nic: bool = False
    security_groups_for_pods: bool = False
    ipv6: bool = False  # an IPv6 cluster: IPv6 pods, IPv4 egress through egress-cni
    v6_egress: bool = False  # an IPv4 cluster with ENABLE_V6_EGRESS: IPv6 egress through egress-cni

    @property
    def agent_settings(self) -> dict[str, str]:
        mode = IPV6_CLUSTER_ENV if self.ipv6 else V6_EGRESS_ENV if self.v6_egress else {}
        return {**mode, **self.settings}

    @property
    def egress(self) -> int | None:
        """The family egress-cni gives pods egress to, if any."""
        return 4 if self.ipv6 else 6 if self.v6_egress else None


def parse_args(argv: Sequence[str]) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m vpccni.testbed.demo",
        description="Testbed nodes running the real aws-k8s-agent and aws-cni; pods; real traffic; teardown.",
    )
    parser.add_argument("--nodes", type=int, default=2, help="testbed nodes (default 2)")
    parser.add_argument("--pods", type=int, default=40, help="pods spread over the nodes (default 40)")
    parser.add_argument(
        "--instance-type",
        help=f"EC2 instance type (default m5.large; {multinic.INSTANCE_TYPE} with --multi-nic)",
    )
    parser.add_argument("--keep", action="store_true", help="leave everything up until Ctrl-C")
    parser.add_argument("--workers", type=int, default=8, help="concurrent CNI calls (default 8)")
    parser.add_argument(
        "--burst",
        action="store_true",
        help="every pod's ADD at once, as a scale-up does: the agents start every ENI the waiting pods need "
        "together (try --nodes 1 --pods 100 --instance-type m5.4xlarge --burst)",
    )
    parser.add_argument(
        "--runtime",
        choices=("shim", "containerd"),
        default="shim",
        help="how pods are made: exec the installed aws-cni as a runtime does (default), or containerd's CRI",
    )
    parser.add_argument(
        "--cluster-view",
        action="store_true",
        help="also show `vpccni cluster`: every node from the API server and its aws-node's metrics",
    )
    parser.add_argument(
        "--security-groups-for-pods",
        action="store_true",
        help="security groups for pods instead (demo/sgp.py): a SecurityGroupPolicy, branch ENIs on VLANs, "
        "connections the groups allow and block, in strict and standard mode (with --ipv6: in an IPv6 "
        "cluster, each branch pod on its branch ENI's IPv6 address)",
    )
    parser.add_argument(
        "--no-python-host",
        action="store_true",
        help="each node executes aws-cni inside a root file system with no Python and no C library "
        "(a static busybox only), as on Bottlerocket",
    )
    family = parser.add_mutually_exclusive_group()
    family.add_argument(
        "--ipv6",
        action="store_true",
        help="an IPv6 cluster in a dual-stack VPC: IPv6 pods from a /80 on each node's primary ENI, IPv4 "
        "egress through egress-cni",
    )
    family.add_argument(
        "--v6-egress",
        action="store_true",
        help="an IPv4 cluster in a dual-stack VPC with ENABLE_V6_EGRESS: IPv6 egress through egress-cni",
    )
    parser.add_argument(
        "--multi-nic",
        action="store_true",
        help="ENABLE_MULTI_NIC on a two-card instance type: a pod with an interface per network card on each "
        "node, traffic through each to a VPC host, beside the ordinary pods",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an aws-node environment variable for every agent, e.g. --set WARM_IP_TARGET=5 (repeatable)",
    )
    args = parser.parse_args(list(argv))
    if args.nodes < 1 or args.pods < 0 or args.workers < 1:
        parser.error("--nodes and --workers must be at least 1, --pods at least 0")
    if args.no_python_host and args.runtime != "shim":
        parser.error(
            "--no-python-host runs aws-cni chrooted, as the shim runtime execs it: not with containerd"
        )
    if args.security_groups_for_pods and (
        args.keep
        or args.runtime != "shim"
        or args.no_python_host
        or args.cluster_view
        or args.multi_nic
        or args.v6_egress
    ):
        parser.error(
            "--security-groups-for-pods runs its own two-node scenario: it takes --instance-type, --ipv6 and"
            " --set"
        )
    instance_type = args.instance_type or (multinic.INSTANCE_TYPE if args.multi_nic else "m5.large")
    try:
        limits_for(instance_type)  # a type the testbed does not know fails here, not once it is up
        problem = multinic.instance_type_error(instance_type) if args.multi_nic else ""
    except ValueError as exc:
        problem = str(exc)
    if problem:
        parser.error(problem)
    if args.multi_nic and args.ipv6:
        parser.error("--multi-nic and --ipv6: IPv6 mode serves pods from the primary ENI alone (upstream)")
    settings = dict(multinic.SETTINGS) if args.multi_nic else {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--set {item!r}: use NAME=VALUE")
        settings[name] = value
    return DemoOptions(
        nodes=args.nodes,
        pods=args.pods,
        instance_type=instance_type,
        keep=args.keep,
        workers=max(args.workers, args.pods) if args.burst else args.workers,
        runtime=args.runtime,
        no_python_host=args.no_python_host,
        settings=settings,
        cluster_view=args.cluster_view,
        multi_nic=args.multi_nic,
        security_groups_for_pods=args.security_groups_for_pods,
        ipv6=args.ipv6,
        v6_egress=args.v6_egress,
    )
