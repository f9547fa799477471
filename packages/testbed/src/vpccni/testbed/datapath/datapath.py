"""The testbed's VPC datapath: instance namespaces, the VPC router behind their ENIs, following EC2 state
live.

EC2 events drive it: an attached ENI becomes a link with the ENI's MAC in the instance's namespace (`ethN` by
device index, DOWN and unconfigured, as EC2 hands it to the OS), a detached one disappears, and every address
change re-routes the VPC and re-writes the source/destination check before the EC2 call returns. A branch ENI
associated with a trunk becomes a VLAN sub-port of the trunk's port, and every EC2 change re-applies the
security groups (`secgroups`). In a dual-stack VPC (`VpcLayout(vpc_ipv6_cidr=...)`) routes and checks include
each ENI's IPv6 addresses and /80 prefixes.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vpccni.testbed.ec2.security import SecurityState
from vpccni.testbed.events import (
    AddressesChanged,
    BranchAssociated,
    BranchDisassociated,
    EniAttached,
    EniDetached,
    StateChanged,
)

from .node import NodeNetwork
from .vpc import BranchPort, EniPort, VpcLayout, VpcRouter

log = logging.getLogger(__name__)


class CloudView(Protocol):
    """The part of the testbed's EC2 the datapath needs."""

    def subscribe(self, callback: Callable[[object], None]) -> None: ...

    def eni_addresses(
        self, eni_id: str
    ) -> tuple[ipaddress.IPv4Address, list[ipaddress.IPv4Address], list[ipaddress.IPv4Network], str]: ...

    def subnet_cidr(self, subnet_id: str) -> ipaddress.IPv4Network: ...

    def instance_enis(self, instance_id: str) -> list[EniAttached]: ...

    def trunk_associations(self, trunk_eni_id: str) -> list[BranchAssociated]: ...

    def security_state(self) -> SecurityState: ...

    def eni_ipv6(self, eni_id: str) -> tuple[list[ipaddress.IPv6Address], list[ipaddress.IPv6Network]]: ...


@dataclass(frozen=True, kw_only=True)
class DatapathConfig:
    """Names and addresses of one datapath run. Namespaces are `vtb-<run_id>-<role>`."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    layout: VpcLayout = field(default_factory=VpcLayout)

    def netns_name(self, role: str) -> str:
        name = f"vtb-{self.run_id}-{role}"
        if len(name) > 64 or "/" in name:
            raise ValueError(f"namespace name {name!r} is not usable; use a shorter run id or node name")
        return name


def node_ifname(*, device_index: int, network_card: int) -> str:
    """ethN by device index on network card 0; eth(100*card + index) on other cards."""
    return f"eth{device_index + 100 * network_card}"


class Datapath:
    """Owns every namespace and link of the run; `stop()` removes them all."""

    def __init__(self, *, cloud: CloudView, config: DatapathConfig) -> None:
        self.cloud = cloud
        self.config = config
        self.router = VpcRouter(
            vpc_netns=config.netns_name("vpc"),
            internet_netns=config.netns_name("inet"),
            vpc_host_netns=config.netns_name("vpchost"),
            layout=config.layout,
        )
        self._lock = threading.RLock()
        self._nodes: dict[str, NodeNetwork] = {}  # instance id -> its namespace
        self._running = False

    @property
    def internet_ip(self) -> ipaddress.IPv4Address:
        return self.config.layout.internet_host.ip

    @property
    def vpc_host_ip(self) -> ipaddress.IPv4Address:
        return self.config.layout.vpc_host.ip

    @property
    def internet_ip6(self) -> ipaddress.IPv6Address | None:
        """The internet host's IPv6, in a dual-stack VPC."""
        return self.config.layout.internet_host6.ip if self.ipv6 else None

    @property
    def vpc_host_ip6(self) -> ipaddress.IPv6Address | None:
        host = self.config.layout.vpc_host6
        return host.ip if host is not None else None

    @property
    def ipv6(self) -> bool:
        return self.config.layout.vpc_ipv6_cidr is not None

    def start(self) -> None:
        with self._lock:
            try:
                self.router.start()
            except BaseException:
                self.router.stop()
                raise
            self._running = True
        self.cloud.subscribe(self._on_event)

    def stop(self) -> None:
        """Delete every node namespace, then the VPC ones. Idempotent."""
        with self._lock:
            self._running = False
            for node in self._nodes.values():
                node.delete()
            self._nodes.clear()
            self.router.stop()

    def add_node(self, *, instance_id: str, name: str) -> NodeNetwork:
        """Create the instance's namespace, plug the ENIs attached to it now, set up eth0 as the AMI would."""
        with self._lock:
            if not self._running:
                raise RuntimeError("the datapath is not started; call start() first")
            if instance_id in self._nodes:
                raise ValueError(f"{instance_id} already has a namespace ({self._nodes[instance_id].netns})")
            node = NodeNetwork(netns=self.config.netns_name(name))
            self._nodes[instance_id] = node
            try:
                node.create()
                for attachment in self.cloud.instance_enis(instance_id):
                    self._plug(attachment)
                self._secure()
            except BaseException:
                self._nodes.pop(instance_id)
                node.delete()
                raise
            return node

    def node(self, instance_id: str) -> NodeNetwork:
        return self._nodes[instance_id]

    def remove_node(self, instance_id: str) -> None:
        """Unplug the instance's ENIs from the VPC and delete its namespace (instance terminated/gone)."""
        with self._lock:
            node = self._nodes.pop(instance_id, None)
            if node is None:
                return
            for port in self.router.plugged():
                if port.node_netns == node.netns:
                    self.router.unplug(port.eni_id)
            node.delete()
            self._secure()

    def _on_event(self, event: object) -> None:
        with self._lock:
            if not self._running:
                return
            try:
                if isinstance(event, EniAttached):
                    self._plug(event)
                elif isinstance(event, EniDetached):
                    self.router.unplug(event.eni_id)
                elif isinstance(event, AddressesChanged):
                    self._route(event.eni_id)
                elif isinstance(event, BranchAssociated):
                    self._plug_branch(event)
                elif isinstance(event, BranchDisassociated):
                    self.router.unplug(event.branch_eni_id)
                elif isinstance(event, StateChanged):
                    self._secure()  # last event of every EC2 change: groups, rules, members, ports
            except Exception:
                # The EC2 call already succeeded; a datapath failure must show up in the logs, not as an
                # API error the product would misread.
                log.exception("datapath could not follow %s", event)

    def _plug(self, event: EniAttached) -> None:
        node = self._nodes.get(event.instance_id)
        if node is None:
            return  # an instance the datapath does not host
        primary, _, _, subnet_id = self.cloud.eni_addresses(event.eni_id)
        subnet = self.cloud.subnet_cidr(subnet_id)
        is_primary = event.device_index == 0 and event.network_card == 0
        port = EniPort(
            eni_id=event.eni_id,
            mac=event.mac,
            node_netns=node.netns,
            node_ifname=node_ifname(device_index=event.device_index, network_card=event.network_card),
            primary_ip=primary,
            subnet=subnet,
            public=is_primary,
            ipv6=self.ipv6,
        )
        self.router.plug(port)
        self._route(event.eni_id)
        if is_primary:
            gateway = self.router.ensure_gateway(subnet)
            address = ipaddress.IPv4Interface(f"{primary}/{subnet.prefixlen}")
            v6 = self.cloud.eni_ipv6(event.eni_id)[0] if self.ipv6 else []
            node.configure_primary(
                ifname=port.node_ifname, address=address, gateway=gateway, ipv6=v6[0] if v6 else None
            )
        for association in self.cloud.trunk_associations(event.eni_id):
            self._plug_branch(association)

    def _plug_branch(self, event: BranchAssociated) -> None:
        primary, _, _, subnet_id = self.cloud.eni_addresses(event.branch_eni_id)
        port = BranchPort(
            eni_id=event.branch_eni_id,
            trunk_eni_id=event.trunk_eni_id,
            vlan_id=event.vlan_id,
            mac=event.mac,
            primary_ip=primary,
            subnet=self.cloud.subnet_cidr(subnet_id),
            ipv6=tuple(self.cloud.eni_ipv6(event.branch_eni_id)[0]) if self.ipv6 else (),
        )
        self.router.plug_branch(port)

    def _secure(self) -> None:
        self.router.apply_security(self.cloud.security_state())

    def _route(self, eni_id: str) -> None:
        if eni_id not in {p.eni_id for p in self.router.plugged()}:
            return
        _, secondaries, prefixes, _ = self.cloud.eni_addresses(eni_id)
        v6: list[ipaddress.IPv6Network] = []
        if self.ipv6:
            addresses, v6_prefixes = self.cloud.eni_ipv6(eni_id)
            v6 = [ipaddress.IPv6Network(ip) for ip in addresses] + list(v6_prefixes)
        self.router.route_addresses(
            eni_id, secondaries=list(secondaries), prefixes=list(prefixes), ipv6_nets=v6
        )
