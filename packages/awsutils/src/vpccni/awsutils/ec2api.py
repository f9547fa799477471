"""The EC2 seam: the ~15 EC2 actions vpccni uses, and the boto3 adapter behind them.

Requests and responses keep boto3's shapes (plain dicts), so the fake in ``vpccni.awsutils.testing`` and moto
both speak them. The adapter applies the client-side rate limit, times and counts every call through the
:class:`ApiObserver`, and turns botocore errors into the typed errors of ``vpccni.awsutils.errors``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.ec2model import EC2_API_VERSION, trimmed_session
from vpccni.awsutils.errors import THROTTLE_CODES, Ec2Error, error_from_response
from vpccni.awsutils.observer import ApiObserver, NullObserver
from vpccni.awsutils.ratelimit import Ec2RateLimiter

log = logging.getLogger(__name__)

DEFAULT_HTTP_TIMEOUT_S = 10
SDK_MAX_ATTEMPTS = 10  # attempts per call, as upstream's SDK (RetryMaxAttempts)
RETRY_BASE_S = 0.5  # full-jitter back-off before attempt n+1: up to RETRY_BASE_S * 2**n, at most RETRY_MAX_S
RETRY_MAX_S = 20.0
# Worth another attempt, as the SDK's standard mode judges: throttling, EC2's own transient failures, and
# the endpoint not answering (botocore's connection and timeout errors, by class name).
TRANSIENT_CODES = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout",
     "RequestTimeoutException", "PriorRequestNotComplete", "EndpointConnectionError", "ConnectionClosedError",
     "ConnectTimeoutError", "ReadTimeoutError", "ConnectionError"}
)  # fmt: skip

Filter = Mapping[str, Any]  # {"Name": ..., "Values": [...]}


class EC2Api(Protocol):
    """The EC2 actions vpccni calls (boto3 request/response shapes). Errors raise ``Ec2Error`` subclasses."""

    def describe_instance_types(self, instance_types: Sequence[str]) -> list[dict[str, Any]]: ...

    def describe_instance(self, instance_id: str) -> dict[str, Any]: ...

    def describe_network_interfaces(
        self, *, eni_ids: Sequence[str] = (), filters: Sequence[Filter] = ()
    ) -> list[dict[str, Any]]: ...

    def describe_subnets(self, *, filters: Sequence[Filter]) -> list[dict[str, Any]]: ...

    def create_network_interface(self, **params: Any) -> dict[str, Any]: ...

    def attach_network_interface(
        self, *, eni_id: str, instance_id: str, device_index: int, network_card: int
    ) -> str: ...

    def modify_network_interface_attribute(self, **params: Any) -> None: ...

    def detach_network_interface(self, *, attachment_id: str) -> None: ...

    def delete_network_interface(self, *, eni_id: str) -> None: ...

    def create_tags(self, *, resources: Sequence[str], tags: Mapping[str, str]) -> None: ...

    def assign_private_ip_addresses(
        self, *, eni_id: str, ip_count: int = 0, prefix_count: int = 0
    ) -> dict[str, Any]: ...

    def unassign_private_ip_addresses(
        self, *, eni_id: str, ips: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> None: ...

    def assign_ipv6_addresses(self, *, eni_id: str, prefix_count: int) -> dict[str, Any]: ...

    def unassign_ipv6_addresses(self, *, eni_id: str, prefixes: Sequence[str]) -> None: ...


def product_version() -> str:
    try:
        return metadata.version("vpccni-awsutils")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True, kw_only=True)
class Ec2ClientConfig:
    region: str
    endpoint_url: str | None = None
    http_timeout_s: int = DEFAULT_HTTP_TIMEOUT_S
    vpc_cni_version: str = ""
    max_attempts: int = SDK_MAX_ATTEMPTS

    def user_agent_extra(self) -> str:
        extra = f"vpccni/{product_version()}"
        if self.vpc_cni_version:
            extra += f" amazon-vpc-cni-k8s/{self.vpc_cni_version}"
        return extra


def make_boto3_client(config: Ec2ClientConfig, *, sdk_attempts: int = 1) -> Any:
    """An EC2 client with the configured timeout and no retries of its own (``Boto3EC2Api`` retries, through
    its rate limiter; `sdk_attempts` > 1 is upstream's way, modelled by the fleet simulation), built on the
    trimmed EC2 model (``vpccni.awsutils.ec2model``: the same requests, a fraction of the memory).

    botocore's client directly: boto3's session adds only resource and S3 helpers, and importing it costs
    about 3 MiB of resident memory for nothing here."""
    from botocore.config import Config

    botocfg = Config(
        region_name=config.region,
        # One attempt: the SDK's retries would bypass the rate limiter and never tell it EC2 throttled.
        retries={"mode": "standard", "total_max_attempts": sdk_attempts},
        connect_timeout=config.http_timeout_s,
        read_timeout=config.http_timeout_s,
        user_agent_extra=config.user_agent_extra(),
    )
    return trimmed_session().create_client(
        "ec2",
        region_name=config.region,
        api_version=EC2_API_VERSION,
        endpoint_url=config.endpoint_url,
        config=botocfg,
    )


class Boto3EC2Api:
    """The real :class:`EC2Api`. The boto3 client is built on first use (constructors do no I/O)."""

    def __init__(
        self,
        config: Ec2ClientConfig,
        *,
        client_factory: Callable[[Ec2ClientConfig], Any] = make_boto3_client,
        limiter: Ec2RateLimiter | None = None,
        observer: ApiObserver | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._factory = client_factory
        self._client: Any = None
        self._observer: ApiObserver = observer or NullObserver()
        self._clock = clock or SystemClock()
        self._limiter = limiter or Ec2RateLimiter(observer=self._observer, clock=self._clock)
        self._rng = rng or random.Random()

    def _boto(self) -> Any:
        if self._client is None:
            self._client = self._factory(self.config)
        return self._client

    def _call(self, api: str, *, subnet_id: str = "", **params: Any) -> dict[str, Any]:
        """The call, retried as the SDK's standard mode retries (throttling and transient errors, up to
        `max_attempts`, full-jitter back-off doubling to 20 s), but every attempt through the rate limiter,
        which hears of each throttle: the node slows that action down for its next calls too."""
        attempts = max(1, self.config.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                result = self._attempt(api, subnet_id, params)
            except Ec2Error as err:
                if err.code in THROTTLE_CODES:
                    self._limiter.throttled(api)
                if attempt == attempts or not _retryable(err):
                    raise
                delay = self._rng.uniform(0, min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt))
                log.debug(
                    "EC2 %s: %s; attempt %d of %d in %.2fs", api, err.code, attempt + 1, attempts, delay
                )
                self._clock.sleep(delay)
                continue
            self._limiter.succeeded(api)
            return result
        raise AssertionError("unreachable: at least one attempt")

    def _attempt(self, api: str, subnet_id: str, params: dict[str, Any]) -> dict[str, Any]:
        from botocore import xform_name
        from botocore.exceptions import BotoCoreError, ClientError

        # Build the client before taking a token, so the token's time is the time the request is sent.
        method = getattr(self._boto(), xform_name(api))
        self._limiter.acquire(api)
        start = self._clock.monotonic()
        error: str | None = None
        try:
            result: dict[str, Any] = method(**params)
            return result
        except ClientError as exc:
            typed = error_from_response(api, dict(exc.response), subnet_id=subnet_id)
            error = typed.code
            raise typed from exc
        except BotoCoreError as exc:
            error = type(exc).__name__
            raise Ec2Error(
                f"{api} failed: {exc}; check network access to the EC2 endpoint (AWS_EC2_ENDPOINT)",
                api=api,
                code=error,
            ) from exc
        finally:
            duration = self._clock.monotonic() - start
            self._observer.on_call(api, duration, error)
            log.debug("EC2 %s took %.3fs error=%s", api, duration, error)

    def describe_instance_types(self, instance_types: Sequence[str]) -> list[dict[str, Any]]:
        out = self._call("DescribeInstanceTypes", InstanceTypes=list(instance_types))
        return list(out.get("InstanceTypes", []))

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        # A filter, not InstanceIds: EC2 meters unfiltered DescribeInstances against a bucket half the size.
        out = self._call("DescribeInstances", Filters=[{"Name": "instance-id", "Values": [instance_id]}])
        for reservation in out.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return dict(instance)
        raise Ec2Error(
            f"DescribeInstances returned no instance {instance_id}",
            api="DescribeInstances",
            code="InvalidInstanceID.NotFound",
        )

    def describe_network_interfaces(
        self, *, eni_ids: Sequence[str] = (), filters: Sequence[Filter] = ()
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if eni_ids:
            params["NetworkInterfaceIds"] = list(eni_ids)
        if filters:
            params["Filters"] = [dict(f) for f in filters]
            params["MaxResults"] = 1000  # EC2 only pages filtered (not id-listed) queries
        found: list[dict[str, Any]] = []
        while True:
            out = self._call("DescribeNetworkInterfaces", **params)
            found.extend(out.get("NetworkInterfaces", []))
            token = out.get("NextToken")
            if not token:
                return found
            params["NextToken"] = token

    def describe_subnets(self, *, filters: Sequence[Filter]) -> list[dict[str, Any]]:
        out = self._call("DescribeSubnets", Filters=[dict(f) for f in filters])
        return list(out.get("Subnets", []))

    def create_network_interface(self, **params: Any) -> dict[str, Any]:
        out = self._call("CreateNetworkInterface", subnet_id=str(params.get("SubnetId", "")), **params)
        return dict(out["NetworkInterface"])

    def attach_network_interface(
        self, *, eni_id: str, instance_id: str, device_index: int, network_card: int
    ) -> str:
        out = self._call(
            "AttachNetworkInterface",
            NetworkInterfaceId=eni_id,
            InstanceId=instance_id,
            DeviceIndex=device_index,
            NetworkCardIndex=network_card,
        )
        return str(out["AttachmentId"])

    def modify_network_interface_attribute(self, **params: Any) -> None:
        self._call("ModifyNetworkInterfaceAttribute", **params)

    def detach_network_interface(self, *, attachment_id: str) -> None:
        self._call("DetachNetworkInterface", AttachmentId=attachment_id)

    def delete_network_interface(self, *, eni_id: str) -> None:
        self._call("DeleteNetworkInterface", NetworkInterfaceId=eni_id)

    def create_tags(self, *, resources: Sequence[str], tags: Mapping[str, str]) -> None:
        self._call(
            "CreateTags",
            Resources=list(resources),
            Tags=[{"Key": k, "Value": v} for k, v in sorted(tags.items())],
        )

    def assign_private_ip_addresses(
        self, *, eni_id: str, ip_count: int = 0, prefix_count: int = 0
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"NetworkInterfaceId": eni_id}
        if prefix_count:
            params["Ipv4PrefixCount"] = prefix_count
        else:
            params["SecondaryPrivateIpAddressCount"] = ip_count
        return self._call("AssignPrivateIpAddresses", **params)

    def unassign_private_ip_addresses(
        self, *, eni_id: str, ips: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> None:
        params: dict[str, Any] = {"NetworkInterfaceId": eni_id}
        if ips:
            params["PrivateIpAddresses"] = list(ips)
        if prefixes:
            params["Ipv4Prefixes"] = list(prefixes)
        self._call("UnassignPrivateIpAddresses", **params)

    def assign_ipv6_addresses(self, *, eni_id: str, prefix_count: int) -> dict[str, Any]:
        return self._call("AssignIpv6Addresses", NetworkInterfaceId=eni_id, Ipv6PrefixCount=prefix_count)

    def unassign_ipv6_addresses(self, *, eni_id: str, prefixes: Sequence[str]) -> None:
        self._call("UnassignIpv6Addresses", NetworkInterfaceId=eni_id, Ipv6Prefixes=list(prefixes))


def _retryable(err: Ec2Error) -> bool:
    return err.code in THROTTLE_CODES or err.code in TRANSIENT_CODES


class Ec2InstanceTypeSource:
    """Adapts an :class:`EC2Api` to ``limits.InstanceTypeSource`` for the DescribeInstanceTypes fallback."""

    def __init__(self, ec2: EC2Api) -> None:
        self._ec2 = ec2

    def describe_instance_type(self, instance_type: str) -> dict[str, Any] | None:
        try:
            found = self._ec2.describe_instance_types([instance_type])
        except Ec2Error as exc:
            if exc.code == "InvalidInstanceType":
                return None
            raise
        return found[0] if found else None
