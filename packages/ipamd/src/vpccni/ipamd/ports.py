"""The ports ipamd uses to reach EC2, the instance metadata service, the node's network and its own datastore.

Each port is the narrowest shape the pool manager, the reconciler and node init need. The adapters over
`vpccni.awsutils` and `vpccni.networkutils` (`vpccni.ipamd.adapters`) and the datastore implement them;
tests use the stateful fakes in `vpccni.ipamd.pool.testing` (EC2 and IMDS: `testing_cloud`, the datastore:
`testing_store`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Protocol

from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.networkutils.model import IPNetwork

# EC2 error codes the pool reacts to (upstream names, they are the API's contract).
INSUFFICIENT_CIDR_CODES = frozenset({"InsufficientCidrBlocks", "InsufficientFreeAddressesInSubnet"})
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
ENI_NOT_FOUND_CODE = "InvalidNetworkInterfaceID.NotFound"
IP_LIMIT_EXCEEDED_CODE = "PrivateIpAddressLimitExceeded"
ATTACHMENT_LIMIT_CODE = "AttachmentLimitExceeded"
# Not EC2's: every subnet a new ENI could go to rests after EC2 said it is full (`EniRequest.avoid_subnets`).
NO_USABLE_SUBNET_CODE = "NoUsableSubnet"


class CloudError(Exception):
    """An EC2 call failed; `code` is EC2's error code (e.g. `InsufficientCidrBlocks`), `subnet_id` when
    known."""

    def __init__(
        self, message: str, *, code: str, subnet_id: str | None = None, subnet_ids: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.subnet_id = subnet_id
        # Every subnet the failed call found full (a new ENI tries each candidate in turn).
        self.subnet_ids = subnet_ids or ((subnet_id,) if subnet_id else ())

    @property
    def is_insufficient_cidr(self) -> bool:
        return self.code in INSUFFICIENT_CIDR_CODES

    @property
    def is_throttle(self) -> bool:
        return self.code in THROTTLE_CODES


def is_secondary_ip(cidr: IPNetwork) -> bool:
    """A secondary IPv4 address (/32), as opposed to a delegated prefix (a /28, or an IPv6 /80)."""
    return cidr.version == 4 and cidr.prefixlen == 32


def cidr_order(cidr: IPNetwork) -> tuple[int, int, int]:
    """A sort key for CIDRs of either family: IPv4 first, then by address and length."""
    return cidr.version, int(cidr.network_address), cidr.prefixlen


def split_cidrs(cidrs: Iterable[IPNetwork]) -> tuple[list[IPv4Address], list[IPNetwork]]:
    """(secondary IPv4 addresses, prefixes): the two lists EC2's unassign calls take."""
    ips: list[IPv4Address] = []
    prefixes: list[IPNetwork] = []
    for cidr in cidrs:
        if isinstance(cidr, IPv4Network) and is_secondary_ip(cidr):
            ips.append(cidr.network_address)
        else:
            prefixes.append(cidr)
    return ips, prefixes


@dataclass(frozen=True, kw_only=True)
class EniAddresses:
    """One ENI as a source (IMDS or EC2) reports it. `secondary_ips` excludes the ENI's primary IP."""

    eni_id: str
    mac: str
    device_number: int
    network_card: int = 0
    primary_ip: IPv4Address
    secondary_ips: frozenset[IPv4Address] = frozenset()
    prefixes: frozenset[IPv4Network] = frozenset()
    ipv6_prefixes: frozenset[IPv6Network] = frozenset()  # delegated /80s (IPv6 mode)
    subnet_id: str = ""
    subnet_cidr: IPv4Network | None = None

    @property
    def cidrs(self) -> frozenset[IPv4Network]:
        """Every IPv4 pod-usable CIDR: the secondary IPs as /32s and the delegated /28s."""
        return frozenset(IPv4Network(ip) for ip in self.secondary_ips) | self.prefixes

    def pool_cidrs(self, *, ipv6: bool) -> frozenset[IPNetwork]:
        """What ipamd serves pods from in its mode: the IPv6 /80s in IPv6 mode, else the IPv4 CIDRs. The
        other family's are not ipamd's (an IPv4 node's ENI may carry IPv6 addresses of its own)."""
        return self.ipv6_prefixes if ipv6 else self.cidrs

    def addresses_only(self) -> EniAddresses:
        """Just what IMDS could report (drops EC2-only fields of a subclass)."""
        return EniAddresses(**{f.name: getattr(self, f.name) for f in fields(EniAddresses)})


@dataclass(frozen=True, kw_only=True)
class EniDescription(EniAddresses):
    """EC2's view of an ENI (DescribeNetworkInterfaces): the truth ipamd trusts over IMDS."""

    interface_type: str = "interface"  # "trunk", "efa", "efa-only" are the ones ipamd treats specially
    tags: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_addresses(cls, eni: EniAddresses) -> EniDescription:
        """An IMDS view taken as the description (ENABLE_IMDS_ONLY_MODE: EC2 may not be called)."""
        return cls(**{f.name: getattr(eni, f.name) for f in fields(EniAddresses)})

    @property
    def tag_map(self) -> dict[str, str]:
        return dict(self.tags)

    @property
    def is_trunk(self) -> bool:
        return self.interface_type == "trunk"

    @property
    def is_efa(self) -> bool:
        return self.interface_type in ("efa", "efa-only")


@dataclass(frozen=True, kw_only=True)
class EniRequest:
    """What to create: exactly one of `ips` (secondary IPv4s) or `prefixes` (/28s) is above zero."""

    ips: int = 0
    prefixes: int = 0
    network_card: int = 0
    subnet_id: str | None = None  # None: the adapter chooses (primary subnet, subnet discovery)
    avoid_subnets: frozenset[str] = frozenset()  # never these (resting after EC2 said they are full)
    security_group_ids: tuple[str, ...] = ()  # empty: the primary ENI's groups


class CloudPort(Protocol):
    """EC2 calls ipamd makes. Every method may raise `CloudError`."""

    def allocate_eni(self, request: EniRequest) -> EniDescription:
        """Create, attach (DeleteOnTermination) and wait until the ENI is visible on the node."""
        ...

    def assign_ips(self, eni_id: str, count: int) -> tuple[IPv4Address, ...]: ...

    def assign_prefixes(self, eni_id: str, count: int) -> tuple[IPv4Network, ...]: ...

    def assign_ipv6_prefix(self, eni_id: str) -> tuple[IPv6Network, ...]:
        """AssignIpv6Addresses with Ipv6PrefixCount=1 (IPv6 mode: the primary ENI's /80)."""
        ...

    def unassign(
        self, eni_id: str, *, ips: Sequence[IPv4Address] = (), prefixes: Sequence[IPNetwork] = ()
    ) -> None:
        """UnassignPrivateIpAddresses for IPv4 addresses and /28s, UnassignIpv6Addresses for /80s."""
        ...

    def free_eni(self, eni_id: str) -> None:
        """Detach, then delete. An ENI that is already gone counts as freed."""
        ...

    def describe_enis(self, eni_ids: Sequence[str]) -> tuple[EniDescription, ...]:
        """EC2's truth for these ENIs.

        Ids EC2 does not know, or that are no longer attached to this instance, are left out: IMDS can be
        stale.
        """
        ...

    def tag_eni(self, eni_id: str, tags: dict[str, str]) -> None: ...


class MetadataPort(Protocol):
    """The instance metadata service: cheap, but can lag EC2 by seconds."""

    def attached_enis(self) -> tuple[EniAddresses, ...]: ...


class NodeNetworkPort(Protocol):
    """Host networking for secondary ENIs (route table, rules); the primary ENI needs none."""

    def setup_eni(self, eni: EniAddresses) -> None: ...

    def teardown_eni(self, *, eni_id: str, device_number: int, primary_ip: IPv4Address | None) -> None: ...


@dataclass(frozen=True, kw_only=True)
class EniRecord:
    """What the datastore keeps about an ENI besides its CIDRs."""

    eni_id: str
    device_number: int
    primary_ip: IPv4Address
    is_primary: bool = False
    is_trunk: bool = False
    is_efa: bool = False
    subnet_id: str = ""


class PoolStore(Protocol):
    """The datastore operations the pool needs. Each takes the datastore lock for its own duration only."""

    def snapshot(self) -> PoolSnapshot: ...

    def add_eni(self, eni: EniRecord) -> None: ...

    def add_cidrs(self, eni_id: str, cidrs: Sequence[IPNetwork], *, is_prefix: bool) -> None: ...

    def remove_cidrs(self, eni_id: str, cidrs: Sequence[IPNetwork]) -> tuple[IPNetwork, ...]:
        """Remove CIDRs that hold no pod; returns those actually removed (an in-use CIDR is skipped)."""
        ...

    def force_remove_cidrs(self, eni_id: str, cidrs: Sequence[IPNetwork]) -> int:
        """Remove CIDRs even if pods hold addresses in them (EC2 no longer has them); returns pods
        affected."""
        ...

    def remove_eni(self, eni_id: str, *, force: bool = False) -> bool:
        """Remove an ENI; without `force` only if no pod holds an address on it. True when removed."""
        ...


class HostNetworkPort(Protocol):
    """SetupHostNetwork: primary-ENI rules, SNAT/connmark chains, sysctls (and stale chains for cards > 0)."""

    def setup_host_network(self) -> None: ...


class AllocationRestorePort(Protocol):
    """Re-marks the checkpoint's allocations in the datastore; returns how many were restored."""

    def restore_allocations(self) -> int: ...


class PodRulesPort(Protocol):
    """configureIPRulesForPods: one `from <pod ip>` rule per allocated address, external service CIDRs."""

    def configure_pod_rules(self) -> None: ...
