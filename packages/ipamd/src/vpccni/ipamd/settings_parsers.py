"""Parsers of environment variable values: pure, each raises ValueError naming what is valid.

The settings registry (`settings_registry.REGISTRY`) pairs every variable with one of these; the ValueError's
message goes into the start-up error ("NAME='value': <message>; valid: ...").
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Callable
from ipaddress import IPv4Network

from vpccni.awsutils.tags import RESERVED_TAG_SUBSTRING

_log = logging.getLogger(__name__)
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})


def parse_bool(raw: str) -> bool:
    """Go's strconv.ParseBool, case-insensitively (as upstream since v1.13)."""
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected a boolean (true/false, 1/0, t/f)")


def int_parser(*, minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        text = raw.strip()
        if not _INT_RE.match(text):
            raise ValueError("expected an integer")
        value = int(text)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ValueError("out of range")
        return value

    return parse


def number_parser(*, minimum: float, exclusive: bool = False, unit: str) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number of {unit}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number of {unit}")
        if value < minimum or (exclusive and value == minimum):
            raise ValueError("out of range")
        return value

    return parse


def seconds_parser(*, minimum: float, exclusive: bool = False) -> Callable[[str], float]:
    return number_parser(minimum=minimum, exclusive=exclusive, unit="seconds")


rate_parser = number_parser(minimum=0.0, unit="calls per second")


def choice_parser(*choices: str, lower: bool = True) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower() if lower else raw.strip()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def parse_str(raw: str) -> str:
    return raw.strip()


def parse_ipv4_cidr_list(raw: str) -> tuple[IPv4Network, ...]:
    """Comma-separated IPv4 CIDRs; every entry must be valid (upstream silently skipped bad ones)."""
    out: list[IPv4Network] = []
    bad: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            out.append(IPv4Network(item, strict=False))
        except ValueError:
            bad.append(item)
    if bad:
        raise ValueError(f"not IPv4 CIDRs: {', '.join(bad)}")
    return tuple(out)


def parse_connmark(raw: str) -> int:
    """A non-zero 32-bit mark, decimal or 0x-hex (Go ParseInt base 0)."""
    try:
        value = int(raw.strip(), 0)
    except ValueError:
        raise ValueError("expected a 32-bit mark such as 0x80") from None
    if not 0 < value <= 0xFFFFFFFF:
        raise ValueError("expected a non-zero 32-bit mark such as 0x80")
    return value


def parse_mtu(raw: str) -> int:
    return int_parser(minimum=576, maximum=9001)(raw)


def parse_veth_prefix(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 4:
        raise ValueError("expected 1 to 4 characters")
    if value in ("eth", "vlan", "lo"):
        raise ValueError("must not be eth, vlan or lo")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ValueError("expected letters, digits, '_', '.' or '-'")
    return value


def parse_eni_tags(raw: str) -> tuple[tuple[str, str], ...]:
    """JSON object of string tags; keys containing k8s.amazonaws.com are dropped (as upstream)."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError('expected a JSON object such as {"team": "blue"}') from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError('expected a JSON object of strings such as {"team": "blue"}')
    for key in sorted(k for k in data if RESERVED_TAG_SUBSTRING in k):
        _log.warning("ADDITIONAL_ENI_TAGS: dropping %r, a reserved key (contains k8s.amazonaws.com)", key)
    return tuple(sorted((k, v) for k, v in data.items() if RESERVED_TAG_SUBSTRING not in k))


def parse_host_port(raw: str) -> str:
    """`host:port` (host may be empty for all interfaces, IPv6 in brackets)."""
    value = raw.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port such as 127.0.0.1:61679")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("expected an IP address or localhost before the port") from None
    return value


def parse_loopback_host_port(raw: str) -> str:
    """`host:port` on a loopback address: a listener that must not be reachable from other machines."""
    value = parse_host_port(raw)
    host = value.rpartition(":")[0].strip("[]")
    if host != "localhost" and not (host and ipaddress.ip_address(host).is_loopback):
        raise ValueError("must be a loopback address such as 127.0.0.1:50051 (TCP has no peer check)")
    return value


def parse_bind_address(raw: str) -> str:
    """`host:port` or `unix:<absolute path>`."""
    value = raw.strip()
    if value.startswith("unix:"):
        if not value[len("unix:") :].startswith("/"):
            raise ValueError("expected unix:/absolute/path")
        return value
    try:
        return parse_host_port(value)
    except ValueError:
        raise ValueError("expected host:port such as 127.0.0.1:61679, or unix:/path") from None


def parse_url(raw: str) -> str:
    value = raw.strip()
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("expected an http:// or https:// URL")
    return value


def parse_abs_path(raw: str) -> str:
    value = raw.strip()
    if not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return value


def parse_log_file(raw: str) -> str:
    value = raw.strip()
    if value in ("stdout", "stderr") or value.startswith("/"):
        return value
    raise ValueError("expected stdout, stderr or an absolute path")


def parse_plugin_log_file(raw: str) -> str:
    value = parse_log_file(raw)
    if value == "stdout":
        raise ValueError("stdout carries the CNI result")
    return value


def parse_log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value == "WARNING":
        value = "WARN"
    if value not in ("DEBUG", "INFO", "WARN", "ERROR", "FATAL"):
        raise ValueError("expected one of DEBUG, INFO, WARN, ERROR, FATAL")
    return value
