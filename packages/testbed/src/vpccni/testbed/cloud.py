"""`Cloud`: the testbed's EC2 (moto + fidelity layer) and IMDS servers, with a VPC ready to launch into.

A dual-stack VPC (`CloudConfig(vpc_ipv6_cidr=...)`) gets that /56 and gives each subnet a /64 of it; its
instances get one IPv6 address on their primary ENI, as an EKS IPv6 node has."""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import boto3
from vpccni.testbed import control
from vpccni.testbed.cloudconfig import (
    CNI_ROLE_TAG,
    DEFAULT_VPC_CIDR,
    DEFAULT_VPC_IPV6_CIDR,
    CloudConfig,
    SubnetSpec,
)
from vpccni.testbed.cloudwatch import ENDPOINT_ENV as CLOUDWATCH_ENDPOINT_ENV
from vpccni.testbed.cloudwatch import CloudWatchService
from vpccni.testbed.ec2.addresses import AddressAllocator
from vpccni.testbed.ec2.backend import MotoBackend
from vpccni.testbed.ec2.calllog import CallLog, CallRecord
from vpccni.testbed.ec2.errors import Ec2Error
from vpccni.testbed.ec2.faults import FaultPlan
from vpccni.testbed.ec2.fidelity import FidelityLayer
from vpccni.testbed.ec2.ipv6 import Ipv6Allocator
from vpccni.testbed.ec2.prefixes import PrefixTable
from vpccni.testbed.ec2.security import SecurityState, read_security_state
from vpccni.testbed.ec2.server import Ec2App, Ec2Server
from vpccni.testbed.ec2.throttle import AccountThrottle, BucketSpec, Throttle
from vpccni.testbed.events import (
    AddressesChanged,
    BranchAssociated,
    BranchDisassociated,
    EniAttached,
    EniDetached,
    Event,
    StateChanged,
)
from vpccni.testbed.imds.gateway import ImdsGateway
from vpccni.testbed.imds.history import SnapshotHistory
from vpccni.testbed.imds.metadata import Snapshot, build_snapshot
from vpccni.testbed.imds.server import ImdsServer, Outage

__all__ = [
    "CNI_ROLE_TAG",
    "DEFAULT_VPC_CIDR",
    "DEFAULT_VPC_IPV6_CIDR",
    "AddressesChanged",
    "CallRecord",
    "Cloud",
    "CloudConfig",
    "EniAttached",
    "EniDetached",
    "InstanceInfo",
    "StateChanged",
    "SubnetSpec",
]

log = logging.getLogger(__name__)

# Successful calls that change nothing IMDS shows, so no instance's metadata is snapshotted for them (with
# hundreds of instances, snapshotting every instance on every call was the testbed's main cost).
_NO_METADATA_CHANGE = frozenset(
    {"CreateTags", "DeleteTags", "CreateNetworkInterface", "DeleteNetworkInterface"}
)

DUMMY_ACCESS_KEY = "AKIAVPCCNITESTBED000"  # moto accepts any credentials; these never reach AWS
DUMMY_SECRET_KEY = "vpccni-testbed-secret"
AMI_ID = "ami-12c6146b"  # an image moto ships


@dataclass(frozen=True, kw_only=True)
class InstanceInfo:
    instance_id: str
    instance_type: str
    primary_eni_id: str
    primary_mac: str
    primary_ip: ipaddress.IPv4Address
    subnet_id: str
    subnet_cidr: ipaddress.IPv4Network
    availability_zone: str
    primary_ipv6: ipaddress.IPv6Address | None = None  # in a dual-stack subnet


class Cloud:
    def __init__(self, config: CloudConfig | None = None) -> None:
        self.config = config or CloudConfig()
        self.region = self.config.region
        # A unique moto account per Cloud keeps testbeds in one process apart.
        self.account_id = str(random.SystemRandom().randrange(10**11, 10**12))
        self._backend = MotoBackend(account_id=self.account_id, region=self.region)
        self._prefixes: PrefixTable[ipaddress.IPv4Network] = PrefixTable()
        self._ipv6_prefixes: PrefixTable[ipaddress.IPv6Network] = PrefixTable()
        self._fidelity = FidelityLayer(
            backend=self._backend,
            prefixes=self._prefixes,
            allocator=AddressAllocator(placement=self.config.address_placement, seed=self.config.seed),
            ipv6_prefixes=self._ipv6_prefixes,
            ipv6_allocator=Ipv6Allocator(placement=self.config.address_placement, seed=self.config.seed),
        )
        self._throttle = (
            AccountThrottle() if self.config.account_limits else Throttle(dict(self.config.throttle))
        )
        self._faults = FaultPlan()
        for action, seconds in self.config.latency.items():
            self._faults.set_latency(action, seconds)
        for action, (code, count) in self.config.errors.items():
            self._faults.inject_error(action, code, count)
        self._calllog = CallLog()
        self._app = Ec2App(
            account_id=self.account_id,
            fidelity=self._fidelity,
            throttle=self._throttle,
            faults=self._faults,
            calllog=self._calllog,
            publish=self._publish,
            control=lambda request: control.apply(self, request),
        )
        self._server = Ec2Server(self._app, host=self.config.host, port=self.config.ec2_port)
        self.cloudwatch = CloudWatchService(
            account_id=self.account_id, region=self.region, host=self.config.host
        )
        self._subscribers: list[Callable[[Event], None]] = []
        self._history = SnapshotHistory()
        self._imds: dict[str, list[ImdsServer]] = {}
        self._imds_lag = self.config.imds_lag
        self._imds_outage = Outage.NONE
        self._lock = threading.Lock()
        self._started = False
        self._client: Any = None
        self.vpc_id = ""
        self.subnet_ids: list[str] = []
        self.security_group_id = ""

    # ---- lifecycle
    def start(self) -> None:
        if self._started:
            return
        self._server.start()
        self.cloudwatch.start()
        self._started = True
        try:
            self._create_network()
        except Exception:
            self.stop()
            raise
        log.info("testbed EC2 on %s (vpc %s, subnets %s)", self.ec2_endpoint, self.vpc_id, self.subnet_ids)

    def _create_network(self) -> None:
        ec2 = self._own_client()
        ipv6 = self.config.vpc_ipv6_cidr
        self.vpc_id = ec2.create_vpc(
            CidrBlock=str(self.config.vpc_cidr), AmazonProvidedIpv6CidrBlock=bool(ipv6)
        )["Vpc"]["VpcId"]
        if ipv6 is not None:
            with self._app.state_lock:
                self._backend.set_vpc_ipv6_cidr(self.vpc_id, ipv6)
        for spec, ipv6_cidr in zip(self.config.subnets, self.config.subnet_ipv6_cidrs(), strict=True):
            extra = {"Ipv6CidrBlock": str(ipv6_cidr)} if ipv6_cidr is not None else {}
            subnet = ec2.create_subnet(
                VpcId=self.vpc_id, CidrBlock=str(spec.cidr), AvailabilityZone=self.config.zone, **extra
            )["Subnet"]
            if ipv6_cidr is not None:
                # As EKS asks of an IPv6 cluster's subnets: ENIs made there (the VPC resource controller's
                # branch ENIs, which ask for no address) get an IPv6 address.
                ec2.modify_subnet_attribute(
                    SubnetId=subnet["SubnetId"], AssignIpv6AddressOnCreation={"Value": True}
                )
            if spec.tags:
                ec2.create_tags(
                    Resources=[subnet["SubnetId"]],
                    Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()],
                )
            self.subnet_ids.append(subnet["SubnetId"])
        self.security_group_id = ec2.create_security_group(
            GroupName="vpccni-testbed-node", Description="vpccni testbed node", VpcId=self.vpc_id
        )["GroupId"]
        # As EKS's cluster security group, its members take any traffic from each other, plus (as node groups
        # often do) from the whole VPC, in both families of a dual-stack VPC; as every new group it sends
        # anything anywhere (EC2, and moto, add the ::/0 egress rule in a VPC with an IPv6 block). The VPC
        # datapath enforces it on real packets.
        vpc_wide: dict[str, Any] = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": str(self.config.vpc_cidr)}]}
        if ipv6 is not None:
            vpc_wide["Ipv6Ranges"] = [{"CidrIpv6": str(ipv6)}]
        ec2.authorize_security_group_ingress(
            GroupId=self.security_group_id,
            IpPermissions=[
                {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": self.security_group_id}]},
                vpc_wide,
            ],
        )

    def stop(self) -> None:
        """Idempotent: stops IMDS servers and EC2, and drops this testbed's moto state."""
        with self._lock:
            servers = [s for group in self._imds.values() for s in group]
            self._imds.clear()
        for server in servers:
            server.stop()
        if self._started:
            self._server.stop()
            self.cloudwatch.stop()
            self._started = False
            self._client = None
            self._backend.reset()

    def __enter__(self) -> Cloud:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- clients
    @property
    def ec2_endpoint(self) -> str:
        return self._server.endpoint

    @property
    def control_endpoint(self) -> str:
        """POST JSON {"op": ..., ...} here to change the running testbed (see vpccni.testbed.control)."""
        return self._server.endpoint + control.CONTROL_PATH

    def client_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_ENDPOINT": self.ec2_endpoint,
            CLOUDWATCH_ENDPOINT_ENV: self.cloudwatch.endpoint,
        }

    def cloudwatch_client(self, **kwargs: Any) -> Any:
        return boto3.client(
            "cloudwatch",
            region_name=self.region,
            endpoint_url=self.cloudwatch.endpoint,
            aws_access_key_id=DUMMY_ACCESS_KEY,
            aws_secret_access_key=DUMMY_SECRET_KEY,
            **kwargs,
        )

    def ec2_client(self, **kwargs: Any) -> Any:
        return boto3.client(
            "ec2",
            region_name=self.region,
            endpoint_url=self.ec2_endpoint,
            aws_access_key_id=DUMMY_ACCESS_KEY,
            aws_secret_access_key=DUMMY_SECRET_KEY,
            **kwargs,
        )

    # ---- instances
    def _own_client(self) -> Any:
        # boto3 clients are thread-safe and cost ~50 ms to build: the testbed's own calls share one.
        with self._lock:
            if self._client is None:
                self._client = self.ec2_client()
            return self._client

    def launch_instance(self, instance_type: str = "m5.large", subnet_id: str | None = None) -> InstanceInfo:
        subnet_id = subnet_id or self.subnet_ids[0]
        with self._app.state_lock:
            dual_stack = self._backend.subnet_ipv6_cidr(subnet_id) is not None
        resp = self._own_client().run_instances(
            ImageId=AMI_ID,
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet_id,
            SecurityGroupIds=[self.security_group_id],
            **({"Ipv6AddressCount": 1} if dual_stack else {}),
        )
        inst = resp["Instances"][0]
        eni = next(n for n in inst["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0)
        self._record_snapshots()
        return InstanceInfo(
            instance_id=inst["InstanceId"],
            instance_type=instance_type,
            primary_eni_id=eni["NetworkInterfaceId"],
            primary_mac=eni["MacAddress"],
            primary_ip=ipaddress.IPv4Address(inst["PrivateIpAddress"]),
            subnet_id=subnet_id,
            subnet_cidr=self._backend.subnet_cidr(subnet_id),
            availability_zone=inst["Placement"]["AvailabilityZone"],
            primary_ipv6=self.eni_ipv6(eni["NetworkInterfaceId"])[0][0] if dual_stack else None,
        )

    def eni_addresses(
        self, eni_id: str
    ) -> tuple[ipaddress.IPv4Address, list[ipaddress.IPv4Address], list[ipaddress.IPv4Network], str]:
        """(primary IP, secondary IPs, /28 prefixes, subnet id) of an ENI, from the live EC2 state."""
        with self._app.state_lock:
            view = self._backend.eni_view(eni_id)
            return view.primary_ip, view.secondary_ips, self._prefixes.of(eni_id), view.subnet_id

    def eni_ipv6(self, eni_id: str) -> tuple[list[ipaddress.IPv6Address], list[ipaddress.IPv6Network]]:
        """(IPv6 addresses, /80 prefixes) of an ENI, from the live EC2 state."""
        with self._app.state_lock:
            return self._backend.eni_view(eni_id).ipv6_addresses, self._ipv6_prefixes.of(eni_id)

    def subnet_ipv6_cidr(self, subnet_id: str) -> ipaddress.IPv6Network | None:
        with self._app.state_lock:
            return self._backend.subnet_ipv6_cidr(subnet_id)

    def subnet_cidr(self, subnet_id: str) -> ipaddress.IPv4Network:
        """A subnet's CIDR, read from the state directly (no API call: not throttled, not in the call log)."""
        with self._app.state_lock:
            return self._backend.subnet_cidr(subnet_id)

    def instance_enis(self, instance_id: str) -> list[EniAttached]:
        """The ENIs attached to an instance now, by (network card, device index); read directly like
        `subnet_cidr`, so testbed plumbing never spends the product's EC2 request budget."""
        with self._app.state_lock:
            attached = []
            for eni in self._backend.instance_enis(instance_id).values():
                slot = self._fidelity.attachment_slot(eni.id) or (0, 0)
                attached.append(
                    EniAttached(
                        instance_id=instance_id,
                        eni_id=eni.id,
                        mac=eni.mac_address,
                        device_index=slot[1],
                        network_card=slot[0],
                    )
                )
        return sorted(attached, key=lambda a: (a.network_card, a.device_index))

    def trunk_associations(self, trunk_eni_id: str) -> list[BranchAssociated]:
        """The branch ENIs associated with a trunk now, read directly like `instance_enis`."""
        with self._app.state_lock:
            return [
                BranchAssociated(
                    branch_eni_id=a.branch_eni_id,
                    trunk_eni_id=a.trunk_eni_id,
                    vlan_id=a.vlan_id,
                    mac=self._backend.eni(a.branch_eni_id).mac_address,
                )
                for a in self._fidelity.trunking.of_trunk(trunk_eni_id)
            ]

    def security_state(self) -> SecurityState:
        """Security groups with their rules and member ENIs, read directly (the VPC datapath enforces it)."""
        with self._app.state_lock:
            return read_security_state(self._backend, self._prefixes.of, self._ipv6_prefixes.of)

    # ---- IMDS
    def _live_snapshot(self, instance_id: str) -> Snapshot | None:
        with self._app.state_lock:
            try:
                return build_snapshot(
                    self._backend,
                    instance_id,
                    self._prefixes.of,
                    self._fidelity.attachment_slot,
                    ipv6_prefixes_of=self._ipv6_prefixes.of,
                )
            except Ec2Error:  # the instance is gone: IMDS has nothing to say
                return None

    def _imds_view(self, instance_id: str) -> Snapshot | None:
        if self._imds_lag <= 0:
            return self._live_snapshot(instance_id)
        return self._history.as_of(instance_id, self._imds_lag)

    def _record_snapshots(self, instance_ids: Iterable[str] | None = None) -> None:
        """Snapshot the metadata of these instances (all when None) for IMDS's lagging view."""
        if instance_ids is None:
            with self._app.state_lock:
                instance_ids = self._backend.instance_ids()
        for instance_id in instance_ids:
            snap = self._live_snapshot(instance_id)
            if snap is not None:
                self._history.record(instance_id, snap)

    def start_imds(
        self, instance_id: str, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
    ) -> ImdsServer:
        """An IMDS server for the instance on host:port, or on `sock` (bound and listening; the server owns
        it from now on and closes it on stop)."""
        server = ImdsServer(lambda: self._imds_view(instance_id), host=host, port=port, sock=sock)
        server.start()
        server.set_outage(self._imds_outage)
        with self._lock:
            self._imds.setdefault(instance_id, []).append(server)
        return server

    def serve_imds(self, gateway: ImdsGateway, instance_id: str) -> str:
        """Serve the instance's IMDS through a gateway shared by many instances (the fleet simulation: no
        network namespace per node); returns the endpoint to give the node's agent. Outages do not apply."""
        return gateway.add(instance_id, lambda: self._imds_view(instance_id))

    def imds_endpoint(self, instance_id: str) -> str:
        with self._lock:
            servers = self._imds.get(instance_id)
        if not servers:
            raise LookupError(
                f"no IMDS server runs for {instance_id}: call start_imds({instance_id!r}) first"
            )
        return servers[0].endpoint

    def set_imds_lag(self, seconds: float) -> None:
        self._record_snapshots()
        self._imds_lag = max(0.0, seconds)

    def set_imds_outage(self, on: bool, mode: Outage | None = None) -> None:
        self._imds_outage = (mode or self.config.imds_outage_mode) if on else Outage.NONE
        with self._lock:
            servers = [s for group in self._imds.values() for s in group]
        for server in servers:
            server.set_outage(self._imds_outage)

    # ---- EC2 behaviour knobs
    def set_latency(self, action: str, seconds: float) -> None:
        self._faults.set_latency(action, seconds)

    def inject_error(self, action: str, code: str, count: int = 1, *, subnet_id: str | None = None) -> None:
        self._faults.inject_error(action, code, count, subnet_id=subnet_id)

    def set_throttle(self, category: str, capacity: int, refill_per_s: float) -> None:
        """With `account_limits`, this only switches the category back on: EC2's sizes are fixed."""
        self._throttle.configure(category, BucketSpec(capacity=capacity, refill_per_s=refill_per_s))

    def disable_throttle(self, category: str) -> None:
        self._throttle.configure(category, None)

    @property
    def call_log(self) -> list[CallRecord]:
        return self._calllog.records()

    def _changed_instances(self, events: list[Event]) -> set[str] | None:
        """The instances whose metadata one call's events may have changed (None: any instance's)."""
        calls = [e for e in events if isinstance(e, StateChanged)]
        if not calls or all(c.action in _NO_METADATA_CHANGE for c in calls):
            return set()
        specific = [e for e in events if not isinstance(e, StateChanged)]
        if not specific and not all(c.eni_id for c in calls):
            return None  # e.g. a VPC or subnet change: snapshot everything, as before
        changed: set[str] = set()
        with self._app.state_lock:
            for event in events:
                if isinstance(event, EniAttached | EniDetached):
                    changed.add(event.instance_id)
                elif isinstance(event, BranchAssociated | BranchDisassociated):
                    if instance := self._eni_instance(event.trunk_eni_id):
                        changed.add(instance)  # the trunk's node
                elif event.eni_id and (instance := self._eni_instance(event.eni_id)):
                    changed.add(instance)
        return changed

    def _eni_instance(self, eni_id: str) -> str:
        try:
            instance = self._backend.eni(eni_id).instance
        except Ec2Error:
            return ""  # deleted meanwhile: no instance shows it
        return str(instance.id) if instance is not None else ""

    def in_flight(self, action: str) -> int:
        """Calls of `action` that arrived and are not answered yet (injected latency included)."""
        return self._calllog.in_flight(action)

    # ---- events
    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """callback(event) after each EC2 state change, on the server thread, outside the state lock."""
        with self._lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[Event], None]) -> None:
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def _publish(self, events: list[Event]) -> None:
        changed = self._changed_instances(events)
        if changed is None or changed:
            self._record_snapshots(changed)
        with self._lock:
            subscribers = list(self._subscribers)
        for event in events:
            for callback in subscribers:
                try:
                    callback(event)
                except Exception:  # a broken subscriber must not break the EC2 API
                    log.exception("testbed event subscriber failed on %s", event)
