"""`vpccni doctor`: the checks of the services the node reaches: IMDS (v2 token and hop limit), the EC2 API
and the node role's permissions (DryRun), and the Kubernetes API server."""

from __future__ import annotations

from collections.abc import Mapping

from vpccni.ipamd.cli.doctor_context import CheckResult, DoctorContext, fail, ok, warn

TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
# The EC2 calls ipamd makes that accept DryRun, with parameters from IMDS when known, and that stay harmless
# even if an endpoint ignored DryRun.
IAM_ACTIONS = (
    "DescribeInstances",
    "DescribeNetworkInterfaces",
    "DescribeSubnets",
    "DescribeInstanceTypes",
    "CreateNetworkInterface",
    "CreateTags",
)
# Not checked: EC2 has no DryRun for the IP calls, and attach/detach/delete need an ENI doctor will not make.
NOT_DRY_RUNNABLE = (
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
)


# ---- AWS
def check_imds(ctx: DoctorContext) -> CheckResult:
    name = "IMDSv2"
    base = ctx.config.imds_endpoint
    try:
        token = ctx.http.request("PUT", f"{base}/latest/api/token", headers={TOKEN_TTL_HEADER: "60"})
    except OSError as exc:
        try:
            v1 = ctx.http.request("GET", f"{base}/latest/meta-data/instance-id")
        except OSError:
            return fail(
                name,
                f"IMDS at {base} does not answer ({exc})",
                "check the instance's metadata options (http-endpoint enabled) and any host firewall "
                "blocking 169.254.169.254",
            )
        hint = " (aws-node runs in a container)" if ctx.config.in_container else ""
        return fail(
            name,
            f"IMDSv1 answers ({v1.status}) but the IMDSv2 token reply never arrives{hint}: "
            "the hop limit is too low",
            "aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2",
        )
    if token.status != 200:
        return fail(name, f"IMDSv2 token request answered {token.status}", "enable IMDSv2 on the instance")
    headers = {TOKEN_HEADER: token.body.strip()}
    found: dict[str, str] = {}
    for key, path in (("instance-id", "instance-id"), ("mac", "mac"), ("region", "placement/region")):
        try:
            reply = ctx.http.request("GET", f"{base}/latest/meta-data/{path}", headers=headers)
        except OSError as exc:
            return fail(name, f"IMDS {path} failed: {exc}", "check IMDS health on the instance")
        if reply.status == 200:
            found[key] = reply.body.strip()
    mac = found.get("mac")
    if mac:
        for key in ("interface-id", "subnet-id"):
            path = f"network/interfaces/macs/{mac}/{key}"
            try:
                reply = ctx.http.request("GET", f"{base}/latest/meta-data/{path}", headers=headers)
            except OSError:
                continue
            if reply.status == 200:
                found[key] = reply.body.strip()
    ctx.imds.update(found)
    if "instance-id" not in found:
        return fail(name, "IMDS gave a token but no instance-id", "check the instance's metadata options")
    return ok(name, f"token and metadata for {found['instance-id']}")


def _dry_run_params(action: str, imds: Mapping[str, str]) -> dict[str, object] | None:
    eni, subnet = imds.get("interface-id"), imds.get("subnet-id")
    if action == "CreateNetworkInterface":
        return {"SubnetId": subnet} if subnet else None
    if action == "AttachNetworkInterface":
        instance = imds.get("instance-id")
        return (
            {"NetworkInterfaceId": eni, "InstanceId": instance, "DeviceIndex": 1}
            if eni and instance
            else None
        )
    if action == "CreateTags":
        return {"Resources": [eni], "Tags": [{"Key": "vpccni-doctor", "Value": "dry-run"}]} if eni else None
    if action == "DescribeInstances" and "instance-id" in imds:
        return {"InstanceIds": [imds["instance-id"]]}
    return {}


def check_ec2(ctx: DoctorContext) -> CheckResult:
    name = "EC2 API and IAM"
    region = ctx.config.region or ctx.imds.get("region", "")
    if not region:
        return warn(name, "no region known (IMDS failed and AWS_REGION unset)", "fix IMDS, or set AWS_REGION")
    ec2 = ctx.ec2_for_region(region)
    denied, errors, allowed, skipped = [], [], [], []
    for action in IAM_ACTIONS:
        params = _dry_run_params(action, ctx.imds)
        if params is None:
            skipped.append(action)
            continue
        outcome = ec2.dry_run(action, params)
        if outcome == "allowed":
            allowed.append(action)
        elif outcome == "denied":
            denied.append(action)
        else:
            errors.append(f"{action}: {outcome.removeprefix('error: ')}")
    if not allowed and not denied:
        return fail(
            name,
            "EC2 is unreachable: " + "; ".join(errors[:2]),
            "check the route/VPC endpoint to ec2.<region>.amazonaws.com (or AWS_EC2_ENDPOINT) and proxies",
        )
    if denied:
        return fail(
            name,
            "the node role may not call " + ", ".join(denied),
            "attach AmazonEKS_CNI_Policy (or deploy/iam-policy.json) to the node or IRSA role of aws-node",
        )
    note = f" (not checked: {', '.join([*skipped, *NOT_DRY_RUNNABLE])})"
    if errors:
        return warn(name, "DryRun errors: " + "; ".join(errors), "see the EC2 error codes above")
    return ok(name, f"DryRun allowed for {len(allowed)} actions{note}")


def check_api_server(ctx: DoctorContext) -> CheckResult:
    name = "Kubernetes API server"
    url = ctx.config.api_server
    if not url:
        return warn(
            name,
            "no API server configured (CLUSTER_ENDPOINT or KUBERNETES_SERVICE_HOST)",
            "run doctor inside the aws-node pod, or set CLUSTER_ENDPOINT",
        )
    try:
        reply = ctx.http.request("GET", f"{url}/version", timeout_s=5.0)
    except OSError as exc:
        if "CERTIFICATE" in str(exc).upper():
            return ok(name, f"{url} answers TLS (certificate not checked by doctor)")
        return fail(
            name,
            f"{url} is unreachable ({exc}): ipamd serves pods but cannot read their metadata",
            "check the node's security group and route to the control plane, and kube-proxy for the "
            "service IP",
        )
    return ok(name, f"{url} answered {reply.status}")
