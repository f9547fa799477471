"""Reading EC2 query-protocol parameters: numbered lists, filters, integers, addresses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TypeVar

from vpccni.testbed.ec2.errors import Ec2Error

Params = dict[str, str]
T = TypeVar("T")


def indexed(params: Params, name: str, suffix: str = "") -> list[str]:
    """Values of `Name.N[.suffix]` query parameters, in N order."""
    pattern = re.compile(rf"^{re.escape(name)}\.(\d+){re.escape('.' + suffix) if suffix else ''}$")
    found = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pattern.match(k)))
    return [v for _, v in found]


def filters(params: Params) -> dict[str, set[str]]:
    """`Filter.N.Name` / `Filter.N.Value.M` as {name: values}."""
    names = {m.group(1): v for k, v in params.items() if (m := re.match(r"^Filter\.(\d+)\.Name$", k))}
    return {name: set(indexed(params, f"Filter.{index}.Value")) for index, name in names.items()}


def integer(params: Params, name: str) -> int:
    try:
        return int(params.get(name, "0"))
    except ValueError as exc:
        raise Ec2Error(
            "InvalidParameterValue", f"{name} must be an integer, got {params.get(name)!r}"
        ) from exc


def ipv4(value: str) -> ipaddress.IPv4Address:
    return _parsed(ipaddress.IPv4Address, value, "IPv4 address")


def ipv6(value: str) -> ipaddress.IPv6Address:
    return _parsed(ipaddress.IPv6Address, value, "IPv6 address")


def ipv6_prefix(value: str) -> ipaddress.IPv6Network:
    return _parsed(ipaddress.IPv6Network, value, "IPv6 prefix")


def _parsed(parse: Callable[[str], T], value: str, what: str) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise Ec2Error("InvalidParameterValue", f"Invalid {what} {value!r}") from exc
