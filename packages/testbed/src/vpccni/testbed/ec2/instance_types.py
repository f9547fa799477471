"""Per-instance-type network limits, from the instance-type data moto ships (as DescribeInstanceTypes)."""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any


@dataclass(frozen=True, kw_only=True)
class InstanceTypeLimits:
    instance_type: str
    max_enis: int
    ipv4_per_eni: int
    default_network_card: int
    enis_per_card: dict[int, int]
    hypervisor: str
    bare_metal: bool
    ipv6_per_eni: int = 0

    @property
    def supports_prefix_delegation(self) -> bool:
        # EC2 (and upstream) allow /28 prefixes only on Nitro and bare-metal instances.
        return self.hypervisor == "nitro" or self.bare_metal


class UnknownInstanceTypeError(ValueError):
    pass


@functools.cache
def _raw_types() -> dict[str, Any]:
    data = resources.files("moto.ec2").joinpath("resources/instance_types.json.gz").read_bytes()
    loaded: dict[str, Any] = json.loads(gzip.decompress(data))
    return loaded


@functools.cache
def limits_for(instance_type: str) -> InstanceTypeLimits:
    raw = _raw_types().get(instance_type)
    if raw is None:
        raise UnknownInstanceTypeError(
            f"instance type {instance_type!r} is not in moto's instance-type data: "
            "pick a real type such as m5.large"
        )
    net = raw["NetworkInfo"]
    cards = {
        int(c["NetworkCardIndex"]): int(c["MaximumNetworkInterfaces"]) for c in net.get("NetworkCards", [])
    }
    return InstanceTypeLimits(
        instance_type=instance_type,
        max_enis=int(net["MaximumNetworkInterfaces"]),
        ipv4_per_eni=int(net["Ipv4AddressesPerInterface"]),
        default_network_card=int(net.get("DefaultNetworkCardIndex", 0)),
        enis_per_card=cards or {0: int(net["MaximumNetworkInterfaces"])},
        hypervisor=str(raw.get("Hypervisor", "")),
        bare_metal=bool(raw.get("BareMetal", False)),
        ipv6_per_eni=int(net.get("Ipv6AddressesPerInterface", 0)) if net.get("Ipv6Supported") else 0,
    )
