"""`vpccni`: the operator CLI. `vpccni enis|pods|max-pods|doctor|support-bundle|cluster|policy --help`.

`run` takes every dependency (introspection, host, HTTP, EC2), so the commands are tested with the fakes in
`vpccni.ipamd.cli.testing`; `main` wires the real ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vpccni.awsutils.limits import max_pods, recommended_max_pods, static_limits
from vpccni.ipamd.cli import bundle as support
from vpccni.ipamd.cli import cluster as cluster_view
from vpccni.ipamd.cli import doctor, doctor_context, doctor_ipv6, doctor_sgp, policy
from vpccni.ipamd.cli.host import Boto3DryRun, Ec2DryRun, HostReader, HttpClient, LocalHost, UrllibHttp
from vpccni.ipamd.cli.introspect import (
    HttpIntrospection,
    IntrospectionError,
    IntrospectionNotFound,
    IntrospectionSource,
    eni_rows,
    pod_rows,
    pod_rows_from_pods,
)
from vpccni.ipamd.cli.tables import render_table
from vpccni.ipamd.plan import kube_endpoint
from vpccni.ipamd.settings import read_settings
from vpccni.k8sapi.cluster import ClusterReader
from vpccni.k8sapi.config import KubeEndpoint
from vpccni.k8sapi.errors import K8sApiError


def kubernetes_cluster(kubeconfig: str | None, *, endpoint: KubeEndpoint | None = None) -> ClusterReader:
    """The real cluster view: ``--kubeconfig``, else where ipamd finds the API server (in-cluster,
    CLUSTER_ENDPOINT, KUBECONFIG), else ``~/.kube/config`` (an operator's machine)."""
    from vpccni.k8sapi.cluster import KubernetesCluster
    from vpccni.k8sapi.config import load_config

    where = endpoint or KubeEndpoint()
    if kubeconfig is None and not where.kubeconfig:
        where = dataclasses.replace(where, kubeconfig=str(Path.home() / ".kube" / "config"))
    return KubernetesCluster(load_config(where, kubeconfig=kubeconfig))


@dataclass(frozen=True, kw_only=True)
class CliDeps:
    introspection_at: Callable[[str], IntrospectionSource]
    host: HostReader
    http: HttpClient
    ec2_for_region: Callable[[str], Ec2DryRun]
    cluster_at: Callable[[str | None], ClusterReader] = kubernetes_cluster


def real_deps() -> CliDeps:
    host = LocalHost()
    settings = read_settings(host.environ())[0]
    endpoint = settings.ec2_endpoint or None
    return CliDeps(
        introspection_at=HttpIntrospection,
        host=host,
        http=UrllibHttp(),
        ec2_for_region=lambda region: Boto3DryRun(region=region, endpoint_url=endpoint),
        cluster_at=lambda kubeconfig: kubernetes_cluster(kubeconfig, endpoint=kube_endpoint(settings)),
    )


def _parser(default_address: str, policy_address: str = policy.DEFAULT_ADDRESS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpccni", description="Operate the VPC CNI on this node.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_address(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--introspection-address",
            default=default_address,
            help=f"ipamd introspection host:port or unix:/path (default {default_address})",
        )

    for name, what in (("enis", "the node's ENIs and their CIDRs"), ("pods", "pod address assignments")):
        p = sub.add_parser(name, help=what, description=f"Show {what} from ipamd's introspection.")
        with_address(p)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("max-pods", help="upstream's max-pods calculator for an instance type")
    p.add_argument("--instance-type", required=True)
    p.add_argument("--prefix-delegation", action="store_true", help="ENABLE_PREFIX_DELEGATION=true")
    p.add_argument("--custom-networking", action="store_true", help="no pods on the primary ENI")
    p.add_argument("--cpu-cap", action="store_true", help="cap at 110 (≤30 vCPUs) or 250, as the EKS AMI")

    p = sub.add_parser("doctor", help="check what breaks nodes, with a fix for each problem")
    with_address(p)

    p = sub.add_parser("cluster", help="every node's ENIs, addresses, pods and errors, from the API server")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, KUBECONFIG)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("support-bundle", help="a tar.gz of logs, state and host network, without secrets")
    with_address(p)
    p.add_argument("-o", "--output", default="", help="archive path (default vpccni-support-<time>.tar.gz)")
    policy.add_parser(sub, policy_address)
    return parser


def run(argv: Sequence[str], *, deps: CliDeps, out: TextIO, err: TextIO) -> int:
    env = deps.host.environ()
    default_address = read_settings(env)[0].introspection_bind_address
    args = _parser(default_address, policy.agent_address(env)).parse_args(list(argv))
    try:
        if args.command == "policy":
            return policy.run(args, deps.introspection_at(args.agent_address), out, err)
        if args.command in ("enis", "pods"):
            return _show(args, deps=deps, out=out)
        if args.command == "max-pods":
            return _max_pods(args, out=out, err=err)
        if args.command == "cluster":
            return _cluster(args, deps=deps, out=out, err=err)
        if args.command == "doctor":
            ctx = doctor_context.DoctorContext(
                host=deps.host,
                http=deps.http,
                ec2_for_region=deps.ec2_for_region,
                introspection=deps.introspection_at(args.introspection_address),
                config=doctor_context.DoctorConfig.from_environ(env),
            )
            results = doctor.run_checks(
                ctx, doctor.ALL_CHECKS + doctor_ipv6.IPV6_CHECKS + doctor_sgp.SGP_CHECKS
            )
            out.write(doctor.render(results))
            return 1 if any(r.status is doctor_context.Status.FAIL for r in results) else 0
        return _support_bundle(args, deps=deps, out=out)
    except IntrospectionError as exc:
        err.write(f"vpccni: {exc}\n")
        return 1


def _show(args: argparse.Namespace, *, deps: CliDeps, out: TextIO) -> int:
    source = deps.introspection_at(args.introspection_address)
    if args.command == "pods":
        return _show_pods(args, source, out=out)
    doc = source.get_json("/v1/enis")
    if args.command == "enis":
        enis = eni_rows(doc)
        if args.json:
            out.write(json.dumps([dataclasses.asdict(r) for r in enis], indent=1) + "\n")
            return 0
        eni_headers = ("CARD", "ENI", "DEVICE", "PRIMARY", "TABLE", "SUBNET", "CIDRS", "ASSIGNED", "TOTAL")
        out.write(
            render_table(
                eni_headers,
                [
                    (
                        r.network_card,
                        r.eni_id,
                        r.device_number,
                        r.primary,
                        r.route_table,
                        r.subnet_id,
                        _cidr_summary(r.cidrs),
                        r.assigned,
                        r.total,
                    )
                    for r in enis
                ],
            )
        )
        return 0
    return 0


def _show_pods(args: argparse.Namespace, source: IntrospectionSource, *, out: TextIO) -> int:
    try:
        pods = pod_rows_from_pods(source.get_json("/v1/pods"))
    except IntrospectionNotFound:  # an ipamd without /v1/pods (upstream's): its ENIs list the pods
        pods = pod_rows(source.get_json("/v1/enis"))
    if args.json:
        out.write(json.dumps([dataclasses.asdict(r) for r in pods], indent=1) + "\n")
        return 0
    headers = ("NAMESPACE", "POD", "IP", "CARD", "ENI", "DEVICE", "TABLE", "VLAN", "ASSIGNED")
    rows = [
        (
            r.namespace,
            r.name,
            r.ip,
            r.network_card,
            r.eni_id,
            r.device_number,
            r.route_table,
            r.vlan_id or "-",
            r.assigned_time,
        )
        for r in pods
    ]
    out.write(render_table(headers, rows))
    return 0


def _cidr_summary(cidrs: Sequence[str]) -> str:
    if len(cidrs) <= 3:
        return ",".join(cidrs)
    return f"{','.join(cidrs[:2])},… ({len(cidrs)})"


def _max_pods(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    limits = static_limits(args.instance_type)
    if limits is None:
        err.write(
            f"vpccni: unknown instance type {args.instance_type!r}: check the spelling (e.g. m5.large); "
            "types newer than this release are looked up by ipamd through DescribeInstanceTypes\n"
        )
        return 2
    if args.prefix_delegation and not limits.supports_prefix_delegation:
        err.write(f"vpccni: {args.instance_type} is not Nitro-based: prefix delegation is not supported\n")
        return 2
    calc = recommended_max_pods if args.cpu_cap else max_pods
    count = calc(limits, custom_networking=args.custom_networking, prefix_delegation=args.prefix_delegation)
    out.write(f"{count}\n")
    return 0


def _cluster(args: argparse.Namespace, *, deps: CliDeps, out: TextIO, err: TextIO) -> int:
    try:
        reader = deps.cluster_at(args.kubeconfig)
    except (FileNotFoundError, ValueError) as exc:
        err.write(f"vpccni: {exc}\n")
        return 2
    try:
        rows = cluster_view.cluster_rows(reader)
    except K8sApiError as exc:
        err.write(f"vpccni: cannot read the cluster: {exc}\n")
        return 1
    total = cluster_view.totals(rows)
    if args.json:
        doc = {"nodes": [dataclasses.asdict(r) for r in rows], "total": dataclasses.asdict(total)}
        out.write(json.dumps(doc, indent=1) + "\n")
    else:
        out.write(render_table(cluster_view.HEADERS, [r.cells() for r in [*rows, total]]))
    return 1 if any(r.aws_node.startswith(("missing", "unreachable")) for r in rows) else 0


def _support_bundle(args: argparse.Namespace, *, deps: CliDeps, out: TextIO) -> int:
    collected = support.collect(
        host=deps.host,
        http=deps.http,
        introspection=deps.introspection_at(args.introspection_address),
        config=support.BundleConfig.from_environ(deps.host.environ()),
    )
    if args.output:
        root = support.write_archive(collected, args.output)
        path = args.output
    else:
        buffer = io.BytesIO()
        root = support.write_archive(collected, buffer)
        path = f"{root}.tar.gz"
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
    out.write(f"wrote {path} ({len(collected.entries)} files, {len(collected.missing)} not collected)\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, deps=real_deps(), out=sys.stdout, err=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
