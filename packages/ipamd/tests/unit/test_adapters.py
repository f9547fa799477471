"""ipamd's real adapters against the stateful fakes of awsutils, networkutils and k8sapi."""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.awsutils.eni import EniManager
from vpccni.awsutils.imds import InstanceMetadata
from vpccni.awsutils.testing import FakeClock, FakeEC2, FakeImds
from vpccni.ipamd.adapters.aws import (
    Ec2CloudPort,
    ImdsMetadataPort,
    SubnetCidrs,
    subnet_cidr_lookup,
)
from vpccni.ipamd.adapters.kube import EniConfigError, KubeLink, KubeTimers
from vpccni.ipamd.adapters.network import EniHostNetwork, HostNetworkSetup, HostSettings, RestoredPodRules
from vpccni.ipamd.adapters.observed import ObservedCloud, ObservedReconciler
from vpccni.ipamd.cni.host_rules import NetlinkHostPodRules
from vpccni.ipamd.datastore.model import AssignedAddress
from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.pool.testing import FakeNode
from vpccni.ipamd.ports import CloudError, EniDescription, EniRequest
from vpccni.k8sapi.model import CniNodeFeature, EniConfig, NodeInfo, Taint
from vpccni.k8sapi.testing import FakeKubeApi
from vpccni.networkutils.host import HostNetwork
from vpccni.networkutils.model import Rule
from vpccni.networkutils.names import host_veth_name
from vpccni.networkutils.pod import PodWiring
from vpccni.networkutils.testing import FakeIptables, FakeNamespace, FakeNetnsNetlink, FakeNetwork, FakeNft


class LiveImds:
    """An IMDS that always shows EC2's current state (the fake IMDS rebuilt on every read)."""

    def __init__(self, ec2: FakeEC2, instance_id: str) -> None:
        self.ec2, self.instance_id = ec2, instance_id
        self.imds = FakeImds()
        self.frozen = False

    def get(self, path: str) -> str:
        if not self.frozen:
            self.imds.sync_from(self.ec2, self.instance_id)
        return self.imds.get(path)


class Node:
    def __init__(self) -> None:
        self.ec2 = FakeEC2()
        self.subnet_id = self.ec2.add_subnet("10.0.1.0/24")
        self.instance_id = self.ec2.launch_instance("m5.large", self.subnet_id)
        self.imds = LiveImds(self.ec2, self.instance_id)
        self.metadata = InstanceMetadata(self.imds)
        self.clock = FakeClock()
        self.subnets = SubnetCidrs(subnet_cidr_lookup(self.ec2))
        self.cloud = Ec2CloudPort(
            enis=EniManager(self.ec2, instance_id=self.instance_id, clock=self.clock),
            subnets=self.subnets,
            candidate_subnets=lambda: [self.subnet_id],
            security_groups=lambda: ["sg-1"],
        )
        self.metadata_port = ImdsMetadataPort(self.metadata, subnets=self.subnets)


@pytest.fixture
def node() -> Node:
    return Node()


def test_allocate_eni_returns_ec2_s_addresses_once_attached(node: Node) -> None:
    eni = node.cloud.allocate_eni(EniRequest(ips=3))
    assert eni.device_number == 1
    assert len(eni.secondary_ips) == 3 and eni.primary_ip not in eni.secondary_ips
    assert eni.subnet_cidr == IPv4Network("10.0.1.0/24")
    ec2 = node.ec2.enis[eni.eni_id]
    assert ec2["Attachment"]["DeleteOnTermination"] is True
    assert {e.eni_id for e in node.metadata_port.attached_enis()} == {eni.eni_id, *_primary(node)}


def test_allocate_eni_does_not_wait_for_a_lagging_imds(node: Node) -> None:
    node.metadata.primary_mac()
    node.imds.frozen = True  # IMDS keeps answering with the state before the ENI existed
    eni = node.cloud.allocate_eni(EniRequest(ips=2))
    # EC2's answer is what counts: its addresses, and the subnet's CIDR for the host setup
    assert eni.secondary_ips == {
        IPv4Address(a["PrivateIpAddress"]) for a in node.ec2.enis[eni.eni_id]["PrivateIpAddresses"][1:]
    }
    assert eni.subnet_cidr == IPv4Network("10.0.1.0/24")
    assert eni.eni_id not in {e.eni_id for e in node.metadata_port.attached_enis()}  # IMDS still lags


def test_describe_enis_is_ec2_truth_for_this_instance_only(node: Node) -> None:
    eni = node.cloud.allocate_eni(EniRequest(ips=2))
    (added,) = node.cloud.assign_ips(eni.eni_id, 1)
    described = {d.eni_id: d for d in node.cloud.describe_enis([eni.eni_id, "eni-gone"])}
    assert set(described) == {eni.eni_id}
    assert described[eni.eni_id].secondary_ips == eni.secondary_ips | {added}
    assert described[eni.eni_id].subnet_cidr == IPv4Network("10.0.1.0/24")

    node.cloud.unassign(eni.eni_id, ips=[added])
    assert added not in node.cloud.describe_enis([eni.eni_id])[0].secondary_ips
    node.cloud.free_eni(eni.eni_id)
    assert node.cloud.describe_enis([eni.eni_id]) == ()


def test_ec2_errors_become_cloud_errors_with_ec2_codes(node: Node) -> None:
    (primary,) = _primary(node)
    node.ec2.fail_next("AssignPrivateIpAddresses", "InsufficientFreeAddressesInSubnet")
    with pytest.raises(CloudError) as err:
        node.cloud.assign_ips(primary, 1)
    assert err.value.is_insufficient_cidr
    node.ec2.fail_next("AssignPrivateIpAddresses", "PrivateIpAddressLimitExceeded")
    with pytest.raises(CloudError) as err:
        node.cloud.assign_ips(primary, 1)
    assert err.value.code == "PrivateIpAddressLimitExceeded"


def test_tag_eni_and_prefixes(node: Node) -> None:
    (primary,) = _primary(node)
    node.cloud.tag_eni(primary, {"node.k8s.amazonaws.com/instance_id": node.instance_id})
    (described,) = node.cloud.describe_enis([primary])
    assert described.tag_map["node.k8s.amazonaws.com/instance_id"] == node.instance_id
    (prefix,) = node.cloud.assign_prefixes(primary, 1)
    assert prefix.prefixlen == 28
    assert prefix in node.cloud.describe_enis([primary])[0].prefixes


def test_subnet_cidrs_learn_from_imds_and_ask_ec2_once() -> None:
    asked: list[str] = []

    def lookup(subnet_id: str) -> IPv4Network | None:
        asked.append(subnet_id)
        return IPv4Network("10.0.9.0/24") if subnet_id == "subnet-9" else None

    subnets = SubnetCidrs(lookup)
    subnets.remember("subnet-1", IPv4Network("10.0.1.0/24"))
    assert subnets.get("subnet-1") == IPv4Network("10.0.1.0/24")
    assert subnets.get("subnet-9") == subnets.get("subnet-9") == IPv4Network("10.0.9.0/24")
    assert subnets.get("subnet-x") is None
    assert asked == ["subnet-9", "subnet-x"]


def _primary(node: Node) -> list[str]:
    return [e.eni_id for e in node.metadata_port.attached_enis() if e.device_number == 0]


# --- networkutils -----------------------------------------------------------------------------------------


@pytest.fixture
def host() -> FakeNamespace:
    _, ns = FakeNetwork().add_namespace("host")
    ns.add_link("eth0", mac="02:00:00:00:00:01", up=True)
    ns.add_link("eth1", mac="02:00:00:00:00:02")
    return ns


def _secondary(**overrides: object) -> EniDescription:
    fields: dict[str, object] = dict(
        eni_id="eni-2",
        mac="02:00:00:00:00:02",
        device_number=1,
        primary_ip=IPv4Address("10.0.1.20"),
        subnet_id="subnet-1",
        subnet_cidr=IPv4Network("10.0.1.0/24"),
    )
    fields.update(overrides)
    return EniDescription(**fields)  # type: ignore[arg-type]


def test_eni_host_network_sets_up_and_tears_down_the_table_and_rule(host: FakeNamespace) -> None:
    network = EniHostNetwork(netlink=host, mtu=9001, subnet_cidr=lambda _: None)
    network.setup_eni(_secondary())
    rule = Rule(priority=32765, src=IPv4Network("10.0.1.20/32"), table=2)
    assert rule in host.rules()
    assert {str(r.dst) for r in host.routes(2)} == {"10.0.1.1/32", "0.0.0.0/0"}
    network.teardown_eni(eni_id="eni-2", device_number=1, primary_ip=IPv4Address("10.0.1.20"))
    assert rule not in host.rules()


def test_eni_host_network_resolves_an_unknown_subnet_cidr(host: FakeNamespace) -> None:
    network = EniHostNetwork(netlink=host, mtu=9001, subnet_cidr=lambda _: IPv4Network("10.0.1.0/24"))
    network.setup_eni(_secondary(subnet_cidr=None))
    assert {str(r.dst) for r in host.routes(2)} == {"10.0.1.1/32", "0.0.0.0/0"}
    unknown = EniHostNetwork(netlink=host, mtu=9001, subnet_cidr=lambda _: None)
    with pytest.raises(RuntimeError, match="subnet-1"):
        unknown.setup_eni(_secondary(subnet_cidr=None))


def test_host_network_setup_reapplies_only_when_vpc_cidrs_change(host: FakeNamespace) -> None:
    cidrs = [IPv4Network("10.0.0.0/16")]
    iptables = FakeIptables()
    setup = HostNetworkSetup(
        host=HostNetwork(netlink=host, iptables=iptables, nft=FakeNft()),
        settings=HostSettings(),
        node_ip=IPv4Address("10.0.1.10"),
        primary_mac="02:00:00:00:00:01",
        vpc_cidrs=lambda: tuple(cidrs),
    )
    setup.setup_host_network()
    assert any("AWS SNAT CHAIN" in r for r in iptables.rules("nat", "AWS-SNAT-CHAIN-0"))
    assert setup.refresh() is False
    cidrs.append(IPv4Network("100.64.0.0/16"))
    assert setup.refresh() is True
    assert any("100.64.0.0/16" in r for r in iptables.rules("nat", "AWS-SNAT-CHAIN-0"))


def test_restored_pod_rules_match_what_wiring_adds(host: FakeNamespace) -> None:
    network = FakeNetwork()
    wiring = PodWiring(host=host, namespaces=FakeNetnsNetlink(network))
    pod = AssignedAddress(
        key=IPAMKey(network_name="aws-cni", container_id="c1", ifname="eth0"),
        metadata=PodMetadata(namespace="default", name="web"),
        ip=IPv4Address("10.0.1.30"),
        cidr=IPv4Network("10.0.1.30/32"),
        eni_id="eni-2",
        device_number=1,
        network_card=0,
        assigned_at_ns=1,
    )
    unnamed = AssignedAddress(**{**pod.__dict__, "metadata": PodMetadata(), "ip": IPv4Address("10.0.1.31")})
    rules = RestoredPodRules(
        wiring=wiring, host_rules=NetlinkHostPodRules(host), assigned=lambda: (pod, unnamed),
        pool_cidrs=lambda: (), veth_prefix="eni", mtu=9001,
    )  # fmt: skip
    rules.configure_pod_rules()
    got = {(r.priority, str(r.src), str(r.dst), r.table) for r in host.rules() if r.priority in (512, 1536)}
    assert got == {(512, "None", "10.0.1.30/32", 254), (1536, "10.0.1.30/32", "None", 2)}
    assert host_veth_name("default", "web").startswith("eni")


def test_pod_rules_of_a_pool_address_no_pod_holds_are_removed_at_start(host: FakeNamespace) -> None:
    """An ADD killed between its wiring and its checkpoint write left its rules; the address is free again.
    Rules of an address outside the pool (not ipamd's to judge) and of a held one stay."""
    held = AssignedAddress(
        key=IPAMKey(network_name="aws-cni", container_id="c1", ifname="eth0"),
        metadata=PodMetadata(),  # an entry upstream wrote: no name, so no rules are rewritten for it
        ip=IPv4Address("10.0.1.30"),
        cidr=IPv4Network("10.0.1.30/32"),
        eni_id="eni-2",
        device_number=1,
        network_card=0,
        assigned_at_ns=1,
    )
    for ip in ("10.0.1.30", "10.0.1.40", "10.0.1.80", "192.168.5.5"):
        host.add_rule(Rule(priority=512, table=254, dst=IPv4Network(f"{ip}/32")))
        host.add_rule(Rule(priority=1536, table=2, src=IPv4Network(f"{ip}/32")))
    pool = (IPv4Network("10.0.1.30/32"), IPv4Network("10.0.1.40/32"), IPv4Network("10.0.1.80/28"))
    rules = RestoredPodRules(
        wiring=PodWiring(host=host, namespaces=FakeNetnsNetlink(FakeNetwork())),
        host_rules=NetlinkHostPodRules(host), assigned=lambda: (held,), pool_cidrs=lambda: pool,
        veth_prefix="eni", mtu=9001,
    )  # fmt: skip
    rules.configure_pod_rules()
    left = sorted({str(r.dst or r.src) for r in host.rules() if r.priority in (512, 1536)})
    assert left == ["10.0.1.30/32", "192.168.5.5/32"]


# --- Kubernetes -----------------------------------------------------------------------------------------


def test_kube_link_reads_the_node_when_connected() -> None:
    api = FakeKubeApi(node_name="n1")
    api.put_node(NodeInfo(name="n1", max_pods=58))
    clock = FakeClock()
    link = KubeLink(api=api, timers=KubeTimers(connect_timeout_s=1, poll_interval_s=0.01), clock=clock)
    assert link.connect() and link.connected and api.started
    assert link.max_pods() == 58
    assert link.schedulable()
    api.put_node(NodeInfo(name="n1", max_pods=58, taints=(Taint(key="node.kubernetes.io/unschedulable"),)))
    assert link.schedulable(), "the node object is cached for node_ttl_s"
    clock.advance(31)
    assert not link.schedulable()
    link.stop()


def test_kube_link_starts_without_the_server_and_catches_up() -> None:
    api = FakeKubeApi(node_name="n1")
    api.put_node(NodeInfo(name="n1", max_pods=17))
    api.set_available(False)
    link = KubeLink(api=api, timers=KubeTimers(connect_timeout_s=0.05, poll_interval_s=0.01))
    try:
        assert link.connect() is False
        assert link.max_pods() is None and link.schedulable(), "safe defaults while unreachable"
        api.set_available(True)
        deadline = time.monotonic() + 5
        while not link.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.connected and link.max_pods() == 17
    finally:
        link.stop()


# --- metrics around the pool's ports ----------------------------------------------------------------------


def test_observed_cloud_reports_pool_actions_and_their_errors() -> None:
    node = FakeNode.create()
    metrics = IpamdMetrics(with_process_metrics=False)
    cloud = ObservedCloud(node.cloud, metrics)
    (ip,) = cloud.assign_ips(node.primary.eni_id, 1)
    node.cloud.fail("unassign", CloudError("denied", code="UnauthorizedOperation"))
    with pytest.raises(CloudError):
        cloud.unassign(node.primary.eni_id, ips=[ip])
    rendered = metrics.render().decode()
    assert 'awscni_ipamd_error_count{fn="decreaseDatastorePool"} 1.0' in rendered
    assert 'awscni_ipamd_action_inprogress{fn="increaseDatastorePool"} 0.0' in rendered
    assert 'awscni_ipamd_error_count{fn="increaseDatastorePool"}' not in rendered


def test_observed_reconciler_counts_what_the_reconcile_fixed() -> None:
    node = FakeNode.create()
    node.cloud.add_existing_eni(device_number=1, ips=2)  # attached behind ipamd's back
    metrics = IpamdMetrics(with_process_metrics=False)
    ObservedReconciler(node.make_reconciler(), metrics).reconcile()
    rendered = metrics.render().decode()
    assert 'awscni_reconcile_count{fn="eniReconcileAdd"} 1.0' in rendered
    assert 'awscni_reconcile_count{fn="eniIPPoolReconcileAdd"} 2.0' in rendered
    assert "awscni_force_removed_enis 0.0" in rendered


def test_kube_link_reads_the_nodes_eniconfig() -> None:
    api = FakeKubeApi(node_name="n1")
    api.put_node(NodeInfo(name="n1", labels={"k8s.amazonaws.com/eniConfig": "az-a"}))
    link = KubeLink(api=api, timers=KubeTimers(connect_timeout_s=1, poll_interval_s=0.01))
    assert link.connect(required=True)
    keys = {"annotation_key": "k8s.amazonaws.com/eniConfig", "label_key": "k8s.amazonaws.com/eniConfig"}
    with pytest.raises(EniConfigError, match=r"'az-a'.*does not exist"):
        link.eniconfig(**keys)
    api.put_eniconfig(EniConfig(name="az-a", subnet="subnet-7", security_groups=("sg-9",)))
    config = link.eniconfig(**keys)
    assert (config.subnet, config.security_groups) == ("subnet-7", ("sg-9",))
    link.stop()


def test_missing_iam_permission_becomes_an_event_on_the_aws_node_pod() -> None:
    node = FakeNode.create()
    api = FakeKubeApi(node_name="n1")
    api.put_node(NodeInfo(name="n1"))
    link = KubeLink(api=api, timers=KubeTimers(connect_timeout_s=1, poll_interval_s=0.01))
    assert link.connect()
    cloud = ObservedCloud(
        node.cloud,
        IpamdMetrics(with_process_metrics=False),
        on_denied=lambda err: link.report_missing_permission(str(err)),
    )
    node.cloud.fail(
        "assign_ips", CloudError("ec2:AssignPrivateIpAddresses denied", code="UnauthorizedOperation")
    )
    node.cloud.fail("assign_ips", CloudError("slow down", code="RequestLimitExceeded"))
    for _ in range(2):
        with pytest.raises(CloudError):
            cloud.assign_ips(node.primary.eni_id, 1)
    assert [(e.reason, e.message) for e in api.events] == [
        ("MissingIAMPermissions", "ec2:AssignPrivateIpAddresses denied")
    ]
    link.stop()


def test_custom_networking_is_announced_on_the_cninode() -> None:
    api = FakeKubeApi(node_name="n1")
    api.put_node(NodeInfo(name="n1"))
    link = KubeLink(api=api, timers=KubeTimers(connect_timeout_s=1, poll_interval_s=0.01))
    assert link.connect()
    link.announce_custom_networking("az-a")
    link.announce_custom_networking("az-a")  # idempotent
    assert api.get_cninode().features == (CniNodeFeature(name="CustomNetworking", value="az-a"),)
    link.stop()
