"""IMDSv2 client and typed instance-metadata getters (docs/design/upstream-contract.md §5).

``ImdsHttpClient`` is the real :class:`MetadataSource`: it PUTs for a session token, refreshes it before it
expires, retries with back-off and times every read through the :class:`ApiObserver` as ``GetMetadata``.
``InstanceMetadata`` turns raw paths into typed values; a 404 on a list key means "empty".
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Protocol

from vpccni.awsutils.backoff import Backoff
from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.errors import ImdsError, ImdsNotFoundError, ImdsUnavailableError
from vpccni.awsutils.models import EniMetadata
from vpccni.awsutils.observer import IMDS_API, ApiObserver, NullObserver

log = logging.getLogger(__name__)

ENV_IMDS_ENDPOINT = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
METADATA_PREFIX = "/latest/meta-data/"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


class MetadataSource(Protocol):
    def get(self, path: str) -> str:
        """The body at ``latest/meta-data/<path>``; raises ImdsNotFoundError on 404, ImdsError otherwise."""


@dataclass(frozen=True, kw_only=True)
class ImdsConfig:
    endpoint: str = DEFAULT_IMDS_ENDPOINT  # no trailing slash
    token_ttl_s: int = 21600
    # Refresh the token this long before EC2 would expire it, so no read races the expiry.
    refresh_margin_s: float = 60.0
    timeout_s: float = 2.0
    retry: Backoff = field(default_factory=lambda: Backoff(initial_s=0.1, max_s=2.0, attempts=4))


class _HttpStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class ImdsHttpClient:
    """IMDSv2-only client over urllib (no proxies: IMDS is link-local)."""

    def __init__(
        self,
        config: ImdsConfig | None = None,
        *,
        observer: ApiObserver | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config or ImdsConfig()
        self._observer: ApiObserver = observer or NullObserver()
        self._clock = clock or SystemClock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, path: str, headers: dict[str, str]) -> str:
        req = urllib.request.Request(self.config.endpoint + path, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.config.timeout_s) as resp:
                body: bytes = resp.read()
                return body.decode()
        except urllib.error.HTTPError as exc:
            raise _HttpStatusError(exc.code) from None

    def _token_value(self, *, force: bool = False) -> str:
        with self._lock:
            now = self._clock.monotonic()
            if force or self._token is None or now >= self._token_expires - self.config.refresh_margin_s:
                ttl = self.config.token_ttl_s
                self._token = self._request("PUT", TOKEN_PATH, {TOKEN_TTL_HEADER: str(ttl)}).strip()
                self._token_expires = now + ttl
            return self._token

    def invalidate_token(self) -> None:
        with self._lock:
            self._token = None

    def get(self, path: str) -> str:
        start = self._clock.monotonic()
        error: str | None = None
        try:
            return self._get_with_retries(path)
        except ImdsNotFoundError:
            error = "404"
            raise
        except ImdsError as exc:
            error = type(exc).__name__
            raise
        finally:
            self._observer.on_call(IMDS_API, self._clock.monotonic() - start, error)

    def _get_with_retries(self, path: str) -> str:
        policy = self.config.retry
        last = ""
        for attempt in range(policy.attempts):
            try:
                token = self._token_value(force=False)
                try:
                    return self._request("GET", METADATA_PREFIX + path, {TOKEN_HEADER: token})
                except _HttpStatusError as exc:
                    if exc.status != 401:
                        raise
                    # Token rejected (expired early or IMDS restarted): fetch a new one once, now.
                    token = self._token_value(force=True)
                    return self._request("GET", METADATA_PREFIX + path, {TOKEN_HEADER: token})
            except _HttpStatusError as exc:
                if exc.status == 404:
                    raise ImdsNotFoundError(path) from None
                if exc.status < 500 and exc.status != 429:
                    raise ImdsError(
                        f"IMDS refused {path!r} with HTTP {exc.status}; the node must allow IMDSv2 tokens"
                    ) from None
                last = f"HTTP {exc.status}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            if attempt < policy.attempts - 1:
                self._clock.sleep(policy.delay(attempt))
        raise ImdsUnavailableError(
            f"IMDS at {self.config.endpoint} did not answer {path!r} after {policy.attempts} tries ({last}); "
            f"check that IMDSv2 is reachable from the node (hop limit >= 2 for containers, "
            f"{ENV_IMDS_ENDPOINT} if it is not at {DEFAULT_IMDS_ENDPOINT})"
        )


def _lines(body: str) -> list[str]:
    return [line.strip() for line in body.splitlines() if line.strip()]


class InstanceMetadata:
    """Typed getters over a :class:`MetadataSource` for every path upstream reads."""

    def __init__(self, source: MetadataSource) -> None:
        self._source = source

    def _value(self, path: str) -> str:
        return self._source.get(path).strip()

    def _list(self, path: str) -> list[str]:
        try:
            return _lines(self._source.get(path))
        except ImdsNotFoundError:
            return []

    # Instance-wide fields.
    def region(self) -> str:
        return self._value("placement/region")

    def availability_zone(self) -> str:
        return self._value("placement/availability-zone")

    def instance_id(self) -> str:
        return self._value("instance-id")

    def instance_type(self) -> str:
        return self._value("instance-type")

    def local_ipv4(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(self._value("local-ipv4"))

    def ipv6(self) -> ipaddress.IPv6Address | None:
        found = self._list("ipv6")
        return ipaddress.IPv6Address(found[0]) if found else None

    def primary_mac(self) -> str:
        return self._value("mac")

    def macs(self) -> list[str]:
        return [m.rstrip("/") for m in self._list("network/interfaces/macs/")]

    # Per-MAC fields.
    def _mac(self, mac: str, key: str) -> str:
        return self._value(f"network/interfaces/macs/{mac}/{key}")

    def _mac_list(self, mac: str, key: str) -> list[str]:
        return self._list(f"network/interfaces/macs/{mac}/{key}")

    def interface_id(self, mac: str) -> str:
        return self._mac(mac, "interface-id")

    def device_number(self, mac: str, *, primary_mac: str | None = None) -> int:
        """Device index; forced to 0 for the primary MAC (IMDS may report otherwise on some types)."""
        primary = self.primary_mac() if primary_mac is None else primary_mac
        return 0 if mac == primary else int(self._mac(mac, "device-number"))

    def network_card(self, mac: str) -> int:
        found = self._mac_list(mac, "network-card")
        return int(found[0]) if found else 0

    def subnet_id(self, mac: str) -> str:
        return self._mac(mac, "subnet-id")

    def vpc_id(self, mac: str) -> str:
        return self._mac(mac, "vpc-id")

    def security_group_ids(self, mac: str) -> list[str]:
        return self._mac_list(mac, "security-group-ids")

    def local_ipv4s(self, mac: str) -> list[ipaddress.IPv4Address]:
        return [ipaddress.IPv4Address(v) for v in self._mac_list(mac, "local-ipv4s")]

    def ipv4_prefixes(self, mac: str) -> list[ipaddress.IPv4Network]:
        return [ipaddress.IPv4Network(v) for v in self._mac_list(mac, "ipv4-prefix")]

    def ipv6s(self, mac: str) -> list[ipaddress.IPv6Address]:
        return [ipaddress.IPv6Address(v) for v in self._mac_list(mac, "ipv6s")]

    def ipv6_prefixes(self, mac: str) -> list[ipaddress.IPv6Network]:
        return [ipaddress.IPv6Network(v) for v in self._mac_list(mac, "ipv6-prefix")]

    def subnet_ipv4_cidr(self, mac: str) -> ipaddress.IPv4Network | None:
        found = self._mac_list(mac, "subnet-ipv4-cidr-block")
        return ipaddress.IPv4Network(found[0]) if found else None

    def subnet_ipv6_cidrs(self, mac: str) -> list[ipaddress.IPv6Network]:
        return [ipaddress.IPv6Network(v) for v in self._mac_list(mac, "subnet-ipv6-cidr-blocks")]

    def vpc_ipv4_cidrs(self, mac: str) -> list[ipaddress.IPv4Network]:
        return [ipaddress.IPv4Network(v) for v in self._mac_list(mac, "vpc-ipv4-cidr-blocks")]

    def vpc_ipv6_cidrs(self, mac: str) -> list[ipaddress.IPv6Network]:
        return [ipaddress.IPv6Network(v) for v in self._mac_list(mac, "vpc-ipv6-cidr-blocks")]

    def eni(self, mac: str, *, primary_mac: str | None = None) -> EniMetadata:
        """Every field of one attached ENI."""
        return EniMetadata(
            eni_id=self.interface_id(mac),
            mac=mac,
            device_number=self.device_number(mac, primary_mac=primary_mac),
            network_card=self.network_card(mac),
            subnet_id=self.subnet_id(mac),
            subnet_ipv4_cidr=self.subnet_ipv4_cidr(mac),
            subnet_ipv6_cidrs=tuple(self.subnet_ipv6_cidrs(mac)),
            vpc_id=self.vpc_id(mac),
            ipv4_addresses=tuple(self.local_ipv4s(mac)),
            ipv4_prefixes=tuple(self.ipv4_prefixes(mac)),
            ipv6_addresses=tuple(self.ipv6s(mac)),
            ipv6_prefixes=tuple(self.ipv6_prefixes(mac)),
        )

    def attached_enis(self) -> list[EniMetadata]:
        """Every ENI IMDS lists for this instance, primary first, then by (card, device number)."""
        primary = self.primary_mac()
        enis = [self.eni(mac, primary_mac=primary) for mac in self.macs()]
        return sorted(enis, key=lambda e: (e.mac != primary, e.network_card, e.device_number))
