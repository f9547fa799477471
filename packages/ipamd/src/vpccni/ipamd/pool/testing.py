"""Stateful fakes of the ipamd ports, for tests only (product code never imports this module): host
networking, restore, the pool as the allocator sees it, and `FakeNode`, one instance's fakes wired together.
EC2 and IMDS are in `testing_cloud`, the datastore in `testing_store`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.pool.cooldown import ReconcileCooldown
from vpccni.ipamd.pool.eni_actions import store_eni
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.pool.status import GrowthState, PoolStatus
from vpccni.ipamd.pool.testing_cloud import FakeCloud, FakeImds
from vpccni.ipamd.pool.testing_store import FakePoolStore
from vpccni.ipamd.ports import EniAddresses, EniDescription
from vpccni.ipamd.reconcile import Reconciler
from vpccni.networkutils.model import IPAddress, IPNetwork


class FakeNodeNetwork:
    """Records which ENIs have host networking; `fail_setup` makes the next setup raise."""

    def __init__(self) -> None:
        self.set_up: set[str] = set()
        self.torn_down: list[str] = []
        self.fail_setup = 0

    def setup_eni(self, eni: EniAddresses) -> None:
        if self.fail_setup:
            self.fail_setup -= 1
            raise OSError(f"no link with MAC {eni.mac}")
        self.set_up.add(eni.eni_id)

    def teardown_eni(self, *, eni_id: str, device_number: int, primary_ip: IPv4Address | None) -> None:
        self.set_up.discard(eni_id)
        self.torn_down.append(eni_id)


class FakeHostNetwork:
    def __init__(self, *, error: Exception | None = None) -> None:
        self.error = error
        self.setups = 0

    def setup_host_network(self) -> None:
        if self.error is not None:
            raise self.error
        self.setups += 1


class FakeAllocationRestore:
    """Restores `allocations` pods: assigns that many addresses in the store, as the checkpoint would."""

    def __init__(self, store: FakePoolStore, *, allocations: int = 0) -> None:
        self._store = store
        self._allocations = allocations
        self.restored: list[IPAddress] = []

    def restore_allocations(self) -> int:
        for _ in range(self._allocations):
            ip = self._store.assign_pod()
            if ip is not None:
                self.restored.append(ip)
        return len(self.restored)


class IdlePool:
    """The pool manager as the allocator sees it (`PoolSignals`), never growing: an ADD that finds its
    datastore empty fails at once, with `state` as the reason."""

    def __init__(self, state: GrowthState = GrowthState.NO_ENI_SLOTS) -> None:
        self.status = PoolStatus(state=state)
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def wake_if_low(self, snapshot: PoolSnapshot) -> bool:
        return False

    def waiting(self) -> AbstractContextManager[None]:
        return nullcontext()


class FakePodRules:
    def __init__(self) -> None:
        self.runs = 0

    def configure_pod_rules(self) -> None:
        self.runs += 1


@dataclass(kw_only=True)
class FakeNode:
    """One instance's fakes wired together: EC2, an IMDS that can lag, the datastore, host networking."""

    clock: FakeClock
    cloud: FakeCloud
    imds: FakeImds
    store: FakePoolStore
    network: FakeNodeNetwork
    cooldown: ReconcileCooldown
    primary: EniDescription

    @classmethod
    def create(
        cls, *, max_enis: int = 3, ipv4_per_eni: int = 4, primary_ips: int = 0, store_primary: bool = True,
        other_subnets: tuple[str, ...] = (),
    ) -> FakeNode:  # fmt: skip
        clock = FakeClock()
        cloud = FakeCloud(max_enis=max_enis, ipv4_per_eni=ipv4_per_eni, other_subnets=other_subnets)
        primary = cloud.add_existing_eni(device_number=0, ips=primary_ips)
        store = FakePoolStore(clock=clock)
        if store_primary:
            store_eni(store, primary, is_primary=True)
        return cls(
            clock=clock,
            cloud=cloud,
            imds=FakeImds(cloud),
            store=store,
            network=FakeNodeNetwork(),
            cooldown=ReconcileCooldown(clock=clock),
            primary=primary,
        )

    def make_reconciler(self, **options: Any) -> Reconciler:
        return Reconciler(
            store=self.store,
            cloud=self.cloud,
            metadata=self.imds,
            network=self.network,
            cooldown=self.cooldown,
            primary_eni_id=self.primary.eni_id,
            **options,
        )

    def ec2_cidrs(self, *, ipv6: bool = False) -> set[IPNetwork]:
        return {c for i in self.cloud.eni_ids() for c in self.cloud.eni(i).pool_cidrs(ipv6=ipv6)}

    def store_cidrs(self) -> set[IPNetwork]:
        return {c for i in self.store.eni_ids() for c in self.store.cidrs_of(i)}
