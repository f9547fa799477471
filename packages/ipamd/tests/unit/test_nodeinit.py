"""Node init's ordered steps against the fakes, with the real static instance-limits table."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.awsutils.limits import LimitsCatalog
from vpccni.awsutils.tags import TAG_INSTANCE_ID as INSTANCE_ID_TAG
from vpccni.awsutils.tags import TAG_NO_MANAGE as NO_MANAGE_TAG
from vpccni.awsutils.tags import TagSettings
from vpccni.ipamd.nodeinit import InitOptions, NodeIdentity, NodeInit, NodeInitError, NodeInitPorts
from vpccni.ipamd.ownership import EniOwnership
from vpccni.ipamd.pool.config import PoolConfig
from vpccni.ipamd.pool.manager import PoolManager
from vpccni.ipamd.pool.status import GrowthState
from vpccni.ipamd.pool.testing import (
    FakeAllocationRestore,
    FakeHostNetwork,
    FakeNode,
    FakePodRules,
)
from vpccni.ipamd.pool.testing_store import FakePoolStore
from vpccni.ipamd.ports import CloudError

INSTANCE_ID = "i-0123456789abcdef0"
ALL_STEPS = (
    "instance limits",
    "settings validity",
    "host network",
    "discover ENIs",
    "managed ENIs",
    "tag ENIs",
    "set up ENI networks",
    "restore checkpoint",
    "mode-toggle cleanup",
    "pod rules",
    "pre-scale",
)


def options(**changes: object) -> InitOptions:
    return InitOptions(**changes)  # type: ignore[arg-type]


@dataclass(kw_only=True)
class Node(FakeNode):
    host: FakeHostNetwork
    restore: FakeAllocationRestore
    pod_rules: FakePodRules

    def init(
        self,
        options: InitOptions,
        *,
        instance_type: str = "m5.large",
        grow: bool = True,
        manage_untagged: bool = True,
        card_stores: dict[int, FakePoolStore] | None = None,
        unattached_own_enis: Callable[[], Sequence[str]] | None = None,
    ) -> NodeInit:
        card_stores = card_stores or {}
        stores: dict[int, FakePoolStore] = {0: self.store, **card_stores}
        ports = NodeInitPorts(
            limits=LimitsCatalog(),
            metadata=self.imds,
            cloud=self.cloud,
            host=self.host,
            network=self.network,
            store=self.store,
            restore=self.restore,
            pod_rules=self.pod_rules,
            cooldown=self.cooldown,
            card_stores=card_stores,
            card_restores={card: FakeAllocationRestore(store) for card, store in card_stores.items()},
            unattached_own_enis=unattached_own_enis,
        )

        def manager(config: PoolConfig) -> PoolManager:
            return PoolManager(
                config=config,
                store=stores[config.network_card],
                cloud=self.cloud,
                network=self.network,
                cooldown=self.cooldown,
                clock=self.clock,
            )

        identity = NodeIdentity(
            instance_id=INSTANCE_ID, instance_type=instance_type, primary_mac=self.primary.mac, max_pods=29
        )
        ownership = EniOwnership(
            instance_id=INSTANCE_ID,
            primary_eni_id=self.primary.eni_id,
            manage_untagged=manage_untagged,
            tags=TagSettings(additional_tags={"team": "net"}),
            network_cards=frozenset(stores),
            primary_only=options.ipv6,
        )
        return NodeInit(
            options=options,
            identity=identity,
            ownership=ownership,
            ports=ports,
            grow_pool=manager if grow else None,
            clock=self.clock,
        )


def make_node(*, primary_ips: int = 0, restored: int = 0) -> Node:
    fake = FakeNode.create(ipv4_per_eni=10, primary_ips=primary_ips, store_primary=False)
    return Node(
        **vars(fake),
        host=FakeHostNetwork(),
        restore=FakeAllocationRestore(fake.store, allocations=restored),
        pod_rules=FakePodRules(),
    )


def test_a_fresh_node_runs_every_step_in_order_and_pre_scales() -> None:
    node = make_node()
    init = node.init(options())
    result = init.run()
    assert init.steps_done == ALL_STEPS
    assert node.host.setups == 1 and node.pod_rules.runs == 1
    assert result.config.max_enis == 3 and result.config.max_ips_per_eni == 9 and result.config.max_pods == 29
    assert result.pool_status is not None and result.pool_status.state is GrowthState.OK
    assert len(node.store.cidrs_of(result.primary_eni_id)) == 9
    assert node.cloud.eni(result.primary_eni_id).tag_map[INSTANCE_ID_TAG] == INSTANCE_ID


def test_existing_enis_are_split_tagged_set_up_and_stored_with_ec2s_addresses() -> None:
    node = make_node(primary_ips=2, restored=1)
    ours = node.cloud.add_existing_eni(device_number=1, ips=3, tags={INSTANCE_ID_TAG: INSTANCE_ID})
    untagged = node.cloud.add_existing_eni(device_number=2, ips=1)
    no_manage = node.cloud.add_existing_eni(device_number=3, ips=1, tags={NO_MANAGE_TAG: "true"})
    node.imds.phantom_ips[ours.eni_id] = {IPv4Address("10.0.250.1")}  # IMDS lags: EC2 does not have it

    result = node.init(options(), grow=False).run()

    assert set(result.managed_eni_ids) == {result.primary_eni_id, ours.eni_id, untagged.eni_id}
    assert result.unmanaged_eni_ids == (no_manage.eni_id,)
    assert result.config.max_enis == 2  # m5.large: 3, minus the unmanaged one
    assert node.network.set_up == {ours.eni_id, untagged.eni_id}
    assert node.store.cidrs_of(ours.eni_id) == set(ours.cidrs)  # the phantom address stayed out
    assert node.cloud.eni(untagged.eni_id).tag_map == {INSTANCE_ID_TAG: INSTANCE_ID, "team": "net"}
    assert NO_MANAGE_TAG in node.cloud.eni(no_manage.eni_id).tag_map
    assert INSTANCE_ID_TAG not in node.cloud.eni(no_manage.eni_id).tag_map
    assert result.restored_allocations == 1


@pytest.mark.parametrize(
    ("tags", "manage_untagged", "managed"),
    [
        ({}, False, False),
        ({INSTANCE_ID_TAG: "i-someoneelse"}, True, True),
        ({INSTANCE_ID_TAG: "i-someoneelse"}, False, False),
        ({INSTANCE_ID_TAG: INSTANCE_ID}, False, True),
        ({NO_MANAGE_TAG: "true", INSTANCE_ID_TAG: INSTANCE_ID}, True, False),
    ],
    ids=[
        "untagged-with-MANAGE_UNTAGGED_ENI=false",
        "another-instance's",
        "another-instance's-with-MANAGE_UNTAGGED_ENI=false",
        "ours",
        "ours-but-no_manage",
    ],
)
def test_managed_eni_rules(tags: dict[str, str], manage_untagged: bool, managed: bool) -> None:
    """Upstream's rule (awsutils.tags.eni_is_managed): an ENI attached here that another instance tagged is
    managed like an untagged one, and then tagged as ours."""
    node = make_node()
    eni = node.cloud.add_existing_eni(device_number=1, tags=tags)
    result = node.init(options(), manage_untagged=manage_untagged, grow=False).run()
    assert (eni.eni_id in result.managed_eni_ids) is managed
    if managed:
        assert node.cloud.eni(eni.eni_id).tag_map[INSTANCE_ID_TAG] == INSTANCE_ID


def test_cards_above_0_and_efa_only_enis_are_left_alone() -> None:
    node = make_node()
    efa_only = node.cloud.add_existing_eni(device_number=1, interface_type="efa-only")
    result = node.init(options(), grow=False).run()
    assert efa_only.eni_id in result.unmanaged_eni_ids


def test_the_primary_eni_is_managed_even_when_tagged_no_manage() -> None:
    node = make_node()
    node.cloud.tag_eni(node.cloud.eni_ids().pop(), {NO_MANAGE_TAG: "true"})
    result = node.init(options(), grow=False).run()
    assert result.managed_eni_ids == (result.primary_eni_id,)


def test_an_eni_only_a_stale_imds_lists_is_ignored() -> None:
    node = make_node()
    gone = node.cloud.add_existing_eni(device_number=1, ips=2)
    node.imds.freeze()
    node.cloud.free_eni(gone.eni_id)
    result = node.init(options(), grow=False).run()
    assert gone.eni_id not in result.managed_eni_ids and gone.eni_id not in node.store.eni_ids()


def test_unknown_instance_type_says_to_allow_describe_instance_types() -> None:
    node = make_node()
    with pytest.raises(NodeInitError) as err:
        node.init(options(), instance_type="zz9.plural").run()
    assert err.value.step == "instance limits"
    assert "DescribeInstanceTypes" in str(err.value)
    assert node.host.setups == 0  # nothing after the failed step ran


def test_prefix_delegation_falls_back_to_secondary_ips_off_nitro() -> None:
    node = make_node()
    result = node.init(options(prefix_delegation=True, warm_prefix_target=1), instance_type="t2.medium").run()
    assert result.config.prefix_delegation is False and result.config.max_ips_per_eni == 5


def test_prefix_mode_limits_and_mode_toggle_cleanup() -> None:
    node = make_node(
        primary_ips=3, restored=1
    )  # secondary IPs from before PD was switched on; one holds a pod
    result = node.init(options(prefix_delegation=True, warm_prefix_target=1)).run()
    assert result.config.max_prefixes_per_eni == 9 and result.config.max_ips_per_eni == 144
    assert len(result.cleaned_cidrs) == 2
    assert all(node.cooldown.active(c) for c in result.cleaned_cidrs)
    primary_cidrs = node.cloud.eni(result.primary_eni_id).cidrs
    assert not set(result.cleaned_cidrs) & primary_cidrs
    assert IPv4Network(node.restore.restored[0]) in primary_cidrs  # the pod's address stays
    assert sum(1 for c in primary_cidrs if c.prefixlen == 28) == 1  # pre-scale: WARM_PREFIX_TARGET=1


def test_eni_setup_is_retried_five_times_ten_seconds_apart() -> None:
    node = make_node()
    node.cloud.add_existing_eni(device_number=1, ips=1)
    node.network.fail_setup = 4
    node.init(options(), grow=False).run()
    assert node.clock.sleeps == [10.0] * 4

    node = make_node()
    eni = node.cloud.add_existing_eni(device_number=1, ips=1)
    node.network.fail_setup = 5
    with pytest.raises(NodeInitError) as err:
        node.init(options(), grow=False).run()
    assert err.value.step == "set up ENI networks" and eni.eni_id in str(err.value)


def test_host_network_failure_names_the_step_and_the_fix() -> None:
    node = make_node()
    node.host.error = PermissionError("iptables: Permission denied")
    with pytest.raises(NodeInitError) as err:
        node.init(options()).run()
    assert err.value.step == "host network" and "NET_ADMIN" in str(err.value)


def test_custom_networking_with_an_empty_pool_fails_init() -> None:
    node = make_node()
    node.cloud.fail(
        "allocate_eni",
        CloudError("subnet full", code="InsufficientFreeAddressesInSubnet", subnet_id=node.cloud.subnet_id),
    )
    with pytest.raises(NodeInitError) as err:
        node.init(options(custom_networking=True)).run()
    assert err.value.step == "pre-scale" and node.cloud.subnet_id in str(err.value)


def test_enis_an_earlier_run_never_attached_are_deleted_before_the_pool_creates_any() -> None:
    node = make_node()
    calls_then: list[list[str]] = []

    def delete_leftovers() -> Sequence[str]:
        calls_then.append(list(node.cloud.calls))
        return ("eni-left1",)

    result = node.init(options(), unattached_own_enis=delete_leftovers).run()
    assert len(calls_then) == 1 and "allocate_eni" not in calls_then[0] and "assign_ips" not in calls_then[0]
    assert result.pool_status is not None and node.store.snapshot().total_ips > 0  # pre-scale ran after


def test_a_failure_to_delete_unattached_enis_is_a_warning_not_a_failed_init(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def denied() -> Sequence[str]:
        raise RuntimeError("UnauthorizedOperation: ec2:DeleteNetworkInterface")

    node = make_node()
    init = node.init(options(), unattached_own_enis=denied)
    init.run()
    assert init.steps_done == ALL_STEPS
    assert any(
        "UnauthorizedOperation" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    # Without provisioning ipamd creates no ENIs and deletes none.
    make_node().init(options(provisioning_enabled=False), unattached_own_enis=denied).run()


def test_imds_only_mode_never_calls_ec2() -> None:
    node = make_node(primary_ips=2)
    result = node.init(options(imds_only=True, provisioning_enabled=False)).run()
    assert node.cloud.calls == []
    assert len(node.store.cidrs_of(result.primary_eni_id)) == 2
    assert result.pool_status is None


def test_multi_nic_stores_each_cards_enis_in_its_datastore_and_grows_each_card() -> None:
    """hpc7a.12xlarge: two network cards of two ENIs each."""
    node = make_node()
    card1 = FakePoolStore(clock=node.clock)
    existing = node.cloud.add_existing_eni(device_number=0, ips=2, network_card=1)
    init = node.init(options(multi_nic=True, warm_ip_target=2), instance_type="hpc7a.12xlarge",
                     card_stores={1: card1})  # fmt: skip
    result = init.run()
    assert [c.network_card for c in (result.config, *result.card_configs)] == [0, 1]
    (config1,) = result.card_configs
    assert (config1.max_enis, config1.max_ips_per_eni) == (2, 49)
    assert (config1.warm_ip_target, config1.minimum_ip_target) == (1, 1)  # upstream's for cards above 0
    assert result.config.max_enis == 2 and result.config.warm_ip_target == 2
    assert card1.eni_ids() == {existing.eni_id} and existing.eni_id not in node.store.eni_ids()
    assert existing.eni_id in node.network.set_up
    assert len(node.store.cidrs_of(result.primary_eni_id)) == 2  # card 0's own warm target
    # Card 1 keeps upstream's one warm address: the second one went back to EC2.
    assert len(card1.cidrs_of(existing.eni_id)) == 1 and len(node.cloud.eni(existing.eni_id).cidrs) == 1


def test_multi_nic_creates_an_eni_on_an_empty_card() -> None:
    node = make_node()
    card1 = FakePoolStore(clock=node.clock)
    node.init(options(multi_nic=True), instance_type="hpc7a.12xlarge", card_stores={1: card1}).run()
    (eni_id,) = card1.eni_ids()
    assert node.cloud.eni(eni_id).network_card == 1 and node.cloud.eni(eni_id).device_number == 0
    assert len(card1.cidrs_of(eni_id)) == 1


def test_a_card_holding_only_an_efa_only_eni_is_left_to_efa() -> None:
    node = make_node()
    card1 = FakePoolStore(clock=node.clock)
    efa = node.cloud.add_existing_eni(device_number=0, interface_type="efa-only", network_card=1)
    result = node.init(options(multi_nic=True), instance_type="hpc7a.12xlarge", card_stores={1: card1}).run()
    assert result.card_configs == () and card1.eni_ids() == set()
    assert efa.eni_id in result.unmanaged_eni_ids
    assert {node.cloud.eni(i).network_card for i in node.cloud.eni_ids()} == {0, 1}  # nothing new on card 1


def test_a_card_with_an_efa_only_eni_and_a_managed_one_is_managed_less_the_efa_only_slot() -> None:
    node = make_node()
    card1 = FakePoolStore(clock=node.clock)
    efa = node.cloud.add_existing_eni(device_number=0, interface_type="efa-only", network_card=1)
    ours = node.cloud.add_existing_eni(device_number=1, ips=1, network_card=1)
    result = node.init(options(multi_nic=True), instance_type="hpc7a.12xlarge", card_stores={1: card1}).run()
    (config1,) = result.card_configs
    assert card1.eni_ids() == {ours.eni_id} and efa.eni_id in result.unmanaged_eni_ids
    assert config1.max_enis == 1  # the EFA-only ENI holds one of the card's two slots


# --- IPv6 mode -------------------------------------------------------------------------------------------


def test_ipv6_mode_assigns_the_primary_enis_80_and_manages_nothing_else() -> None:
    node = make_node(primary_ips=2)
    other = node.cloud.add_existing_eni(device_number=1, ips=3, tags={INSTANCE_ID_TAG: INSTANCE_ID})
    init = node.init(options(ipv6=True, prefix_delegation=True, warm_prefix_target=1))
    result = init.run()
    assert init.steps_done == ALL_STEPS
    assert result.config.ipv6 and result.pool_status is not None
    assert result.pool_status.state is GrowthState.OK
    (prefix,) = node.cloud.eni(result.primary_eni_id).ipv6_prefixes
    assert prefix.prefixlen == 80
    # The datastore serves the /80 alone: the primary ENI's secondary IPv4s are not IPv6 mode's.
    assert node.store.cidrs_of(result.primary_eni_id) == {prefix}
    assert other.eni_id in result.unmanaged_eni_ids and other.eni_id not in node.store.eni_ids()
    assert node.network.set_up == set()  # no secondary ENI gets host networking
    assert node.cloud.calls.count("assign_ipv6_prefix") == 1


def test_ipv6_mode_keeps_the_prefix_ec2_already_shows() -> None:
    node = make_node()
    existing = node.cloud.assign_ipv6_prefix(node.primary.eni_id)
    result = node.init(options(ipv6=True, prefix_delegation=True, warm_prefix_target=1)).run()
    assert node.store.cidrs_of(result.primary_eni_id) == set(existing)
    assert node.cloud.calls.count("assign_ipv6_prefix") == 1  # only the test's own


def test_ipv6_mode_off_nitro_is_a_settings_error_naming_the_instance_type() -> None:
    node = make_node()
    with pytest.raises(NodeInitError) as err:
        node.init(options(ipv6=True, prefix_delegation=True), instance_type="t2.medium").run()
    assert err.value.step == "settings validity"
    assert "t2.medium" in str(err.value) and "Nitro" in str(err.value)
    assert node.host.setups == 0


def test_ipv6_mode_without_a_prefix_fails_node_init_with_the_reason() -> None:
    node = make_node()
    node.cloud.fail("assign_ipv6_prefix", CloudError("denied", code="UnauthorizedOperation"))
    with pytest.raises(NodeInitError) as err:
        node.init(options(ipv6=True, prefix_delegation=True)).run()
    assert err.value.step == "pre-scale"
    assert "no IPv6 /80 prefix" in str(err.value) and "UnauthorizedOperation" in str(err.value)
    assert "ec2:AssignIpv6Addresses" in str(err.value)


def test_ipv6_mode_with_provisioning_disabled_needs_a_prefix_in_place() -> None:
    node = make_node()
    with pytest.raises(NodeInitError, match="provisioning is disabled"):
        node.init(options(ipv6=True, prefix_delegation=True, provisioning_enabled=False)).run()
    node = make_node()
    node.cloud.assign_ipv6_prefix(node.primary.eni_id)
    result = node.init(options(ipv6=True, prefix_delegation=True, provisioning_enabled=False)).run()
    assert len(node.store.cidrs_of(result.primary_eni_id)) == 1
