"""awsutils behind ipamd's `CloudPort` and `MetadataPort`.

Every awsutils error leaves as a `CloudError` carrying EC2's code, so the pool manager branches on codes
(subnet exhausted, throttled, address limit) and never on awsutils' types. A new ENI is returned as soon as
EC2 has attached it, with the addresses EC2's answer gave it: upstream then polls IMDS until the ENI shows
(WaitForENIAndIPsAttached, a second or more of IMDS lag per ENI), but nothing after needs IMDS: the host
setup waits for the ENI's link by MAC, and the reconciler asks EC2 when IMDS lags behind the datastore.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from vpccni.awsutils.ec2api import EC2Api
from vpccni.awsutils.eni import EniManager
from vpccni.awsutils.errors import AwsUtilsError, Ec2Error, ImdsError, SubnetExhaustedError
from vpccni.awsutils.imds import InstanceMetadata
from vpccni.awsutils.models import Ec2Eni, EniMetadata
from vpccni.ipamd.ports import NO_USABLE_SUBNET_CODE, CloudError, EniAddresses, EniDescription, EniRequest
from vpccni.networkutils.model import IPNetwork

log = logging.getLogger(__name__)

IMDS_ERROR_CODE = "ImdsUnavailable"  # not an EC2 code: IMDS failed or never showed the new ENI
AWS_ERROR_CODE = "AwsUtilsError"  # awsutils refused before calling EC2 (e.g. no subnet qualifies)


@contextmanager
def cloud_errors(what: str) -> Iterator[None]:
    """Translate awsutils' errors into `CloudError` with EC2's code (the pool's contract)."""
    try:
        yield
    except SubnetExhaustedError as err:
        raise CloudError(
            f"{what}: {err}", code=err.code, subnet_id=err.subnet_id or None, subnet_ids=err.subnet_ids
        ) from err
    except Ec2Error as err:
        raise CloudError(f"{what}: {err}", code=err.code) from err
    except ImdsError as err:
        raise CloudError(f"{what}: {err}", code=IMDS_ERROR_CODE) from err
    except AwsUtilsError as err:
        raise CloudError(f"{what}: {err}", code=AWS_ERROR_CODE) from err


def eni_from_imds(eni: EniMetadata) -> EniAddresses | None:
    """IMDS's view of an ENI; None for an ENI without an IPv4 address (EFA-only), which ipamd never uses."""
    primary = eni.primary_ipv4
    if primary is None:
        return None
    return EniAddresses(
        eni_id=eni.eni_id,
        mac=eni.mac,
        device_number=eni.device_number,
        network_card=eni.network_card,
        primary_ip=primary,
        secondary_ips=frozenset(eni.secondary_ipv4s),
        prefixes=frozenset(eni.ipv4_prefixes),
        ipv6_prefixes=frozenset(eni.ipv6_prefixes),
        subnet_id=eni.subnet_id,
        subnet_cidr=eni.subnet_ipv4_cidr,
    )


class ImdsMetadataPort:
    """`MetadataPort` over awsutils' IMDS client; remembers each subnet's CIDR for `Ec2CloudPort`."""

    def __init__(self, metadata: InstanceMetadata, *, subnets: SubnetCidrs) -> None:
        self._metadata = metadata
        self._subnets = subnets

    def attached_enis(self) -> tuple[EniAddresses, ...]:
        with cloud_errors("reading the attached ENIs from IMDS"):
            listed = self._metadata.attached_enis()
        out = []
        for item in listed:
            eni = eni_from_imds(item)
            if eni is None:
                continue
            if eni.subnet_cidr is not None:
                self._subnets.remember(eni.subnet_id, eni.subnet_cidr)
            out.append(eni)
        return tuple(out)


class SubnetCidrs:
    """subnet id → CIDR, learnt from IMDS; unknown subnets are looked up with DescribeSubnets once.

    EC2's DescribeNetworkInterfaces has no subnet CIDR, but the ENI's host setup needs it (gateway = .1).
    """

    def __init__(self, lookup: Callable[[str], IPv4Network | None]) -> None:
        self._lookup = lookup
        self._known: dict[str, IPv4Network] = {}
        self._lock = threading.Lock()

    def remember(self, subnet_id: str, cidr: IPv4Network) -> None:
        with self._lock:
            self._known[subnet_id] = cidr

    def get(self, subnet_id: str) -> IPv4Network | None:
        with self._lock:
            known = self._known.get(subnet_id)
        if known is not None or not subnet_id:
            return known
        found = self._lookup(subnet_id)
        if found is not None:
            self.remember(subnet_id, found)
        return found


class Ec2CloudPort:
    """`CloudPort` over awsutils' `EniManager` for this instance."""

    def __init__(
        self,
        *,
        enis: EniManager,
        subnets: SubnetCidrs,
        candidate_subnets: Callable[[], Sequence[str]],
        security_groups: Callable[[], Sequence[str]],
    ) -> None:
        self._enis = enis
        self._subnets = subnets
        self._candidate_subnets = candidate_subnets
        self._security_groups = security_groups

    @property
    def instance_id(self) -> str:
        return self._enis.instance_id

    def allocate_eni(self, request: EniRequest) -> EniDescription:
        with cloud_errors("allocating an ENI"):
            candidates = [request.subnet_id] if request.subnet_id else list(self._candidate_subnets())
            subnet_ids = [s for s in candidates if s not in request.avoid_subnets]
            if not subnet_ids:
                resting = ", ".join(sorted(request.avoid_subnets))
                raise CloudError(
                    f"allocating an ENI: every candidate subnet ({resting}) was full moments ago",
                    code=NO_USABLE_SUBNET_CODE, subnet_ids=tuple(sorted(request.avoid_subnets)),
                )  # fmt: skip
            groups = list(request.security_group_ids or self._security_groups())
            allocated = self._enis.allocate_eni(
                subnet_ids=subnet_ids,
                security_groups=groups,
                ip_count=request.ips,
                prefix_count=request.prefixes,
                network_card=request.network_card,
            )
            if allocated.primary_ipv4 is None:
                raise CloudError(f"new ENI {allocated.eni_id} has no primary IPv4", code=AWS_ERROR_CODE)
        # Addresses from EC2's answer: only what EC2 assigned is ever handed out.
        return EniDescription(
            eni_id=allocated.eni_id,
            mac=allocated.mac,
            device_number=allocated.device_index,
            network_card=allocated.network_card,
            primary_ip=allocated.primary_ipv4,
            secondary_ips=frozenset(allocated.secondary_ipv4s),
            prefixes=frozenset(allocated.ipv4_prefixes),
            subnet_id=allocated.subnet_id,
            subnet_cidr=self._subnet_cidr(allocated.subnet_id),
        )

    def assign_ips(self, eni_id: str, count: int) -> tuple[IPv4Address, ...]:
        with cloud_errors(f"assigning {count} secondary IPs to {eni_id}"):
            return tuple(self._enis.assign_ipv4s(eni_id, count))

    def assign_prefixes(self, eni_id: str, count: int) -> tuple[IPv4Network, ...]:
        with cloud_errors(f"assigning {count} prefixes to {eni_id}"):
            return tuple(self._enis.assign_prefixes(eni_id, count))

    def assign_ipv6_prefix(self, eni_id: str) -> tuple[IPv6Network, ...]:
        with cloud_errors(f"assigning an IPv6 /80 prefix to {eni_id}"):
            return tuple(self._enis.assign_ipv6_prefix(eni_id))

    def unassign(
        self, eni_id: str, *, ips: Sequence[IPv4Address] = (), prefixes: Sequence[IPNetwork] = ()
    ) -> None:
        v4 = [p for p in prefixes if isinstance(p, IPv4Network)]
        v6 = [p for p in prefixes if isinstance(p, IPv6Network)]
        with cloud_errors(f"unassigning addresses of {eni_id}"):
            if ips:
                self._enis.unassign_ipv4s(eni_id, list(ips))
            if v4:
                self._enis.unassign_prefixes(eni_id, v4)
            if v6:
                self._enis.unassign_ipv6_prefixes(eni_id, v6)

    def free_eni(self, eni_id: str) -> None:
        with cloud_errors(f"freeing ENI {eni_id}"):
            self._enis.free_eni(eni_id)

    def describe_enis(self, eni_ids: Sequence[str]) -> tuple[EniDescription, ...]:
        if not eni_ids:
            return ()
        with cloud_errors("describing ENIs"):
            found = self._enis.describe_enis(eni_ids)
        out = []
        for eni in found.values():
            if eni.instance_id != self.instance_id or eni.device_index is None:
                continue  # detached meanwhile, or attached elsewhere: IMDS was stale
            described = self._describe(eni)
            if described is not None:
                out.append(described)
        return tuple(out)

    def tag_eni(self, eni_id: str, tags: dict[str, str]) -> None:
        with cloud_errors(f"tagging {eni_id}"):
            self._enis.create_tags(eni_id, tags)

    def _describe(self, eni: Ec2Eni) -> EniDescription | None:
        if eni.primary_ipv4 is None or eni.device_index is None:
            return None
        return EniDescription(
            eni_id=eni.eni_id,
            mac=eni.mac,
            device_number=eni.device_index,
            network_card=eni.network_card,
            primary_ip=eni.primary_ipv4,
            secondary_ips=frozenset(ip for ip in eni.ipv4_addresses if ip != eni.primary_ipv4),
            prefixes=frozenset(eni.ipv4_prefixes),
            ipv6_prefixes=frozenset(eni.ipv6_prefixes),
            subnet_id=eni.subnet_id,
            subnet_cidr=self._subnet_cidr(eni.subnet_id),
            interface_type=eni.interface_type,
            tags=tuple(sorted(eni.tags.items())),
        )

    def _subnet_cidr(self, subnet_id: str) -> IPv4Network | None:
        try:
            return self._subnets.get(subnet_id)
        except (CloudError, ValueError) as err:
            log.warning("could not read the CIDR of subnet %s: %s", subnet_id, err)
            return None


def subnet_cidr_lookup(ec2: EC2Api) -> Callable[[str], IPv4Network | None]:
    """DescribeSubnets for one subnet's CIDR (for `SubnetCidrs`)."""

    def lookup(subnet_id: str) -> IPv4Network | None:
        with cloud_errors(f"describing subnet {subnet_id}"):
            found = ec2.describe_subnets(filters=[{"Name": "subnet-id", "Values": [subnet_id]}])
        for subnet in found:
            if subnet.get("SubnetId") == subnet_id and subnet.get("CidrBlock"):
                return IPv4Network(str(subnet["CidrBlock"]))
        return None

    return lookup
