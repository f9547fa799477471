"""The whole daemon on the libraries' stateful fakes and a fake clock: no machine, no cloud, no wall clock.

Node init, the pool loop, the reconciler, the datastore's cooldown and the servers all run for real; only
EC2/IMDS (awsutils' fakes), netlink/iptables/nft (networkutils'), the API server (k8sapi's) and time are fake.
Minutes of the daemon's timers pass in a fraction of a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

import pytest
from vpccni.awsutils.errors import ImdsUnavailableError
from vpccni.awsutils.imds import InstanceMetadata
from vpccni.awsutils.node import AwsNode, read_identity
from vpccni.awsutils.testing import FakeClock, FakeEC2, FakeImds
from vpccni.ipamd.adapters.platform import Platform
from vpccni.ipamd.checkpoint.file import FileCheckpointer
from vpccni.ipamd.daemon import Daemon
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.podkey import IPAMKey
from vpccni.ipamd.settings import load_settings
from vpccni.k8sapi.model import NodeInfo
from vpccni.k8sapi.testing import FakeKubeApi
from vpccni.networkutils.testing import FakeIptables, FakeNetnsNetlink, FakeNetwork, FakeNft

T = TypeVar("T")


class LiveImds:
    """IMDS that always shows EC2's current state (the fake EC2 behind it); `down` refuses every read."""

    def __init__(self, ec2: FakeEC2, instance_id: str) -> None:
        self._ec2, self._instance_id, self._imds = ec2, instance_id, FakeImds()
        self.down = False

    def get(self, path: str) -> str:
        if self.down:
            raise ImdsUnavailableError(
                f"IMDS did not answer {path!r} after 4 tries (connection refused); check that IMDSv2 is"
                " reachable from the node"
            )
        self._imds.sync_from(self._ec2, self._instance_id)
        return self._imds.get(path)


def run_until(clock: FakeClock, check: Callable[[], T | None], *, what: str, step_s: float = 1.0) -> T:
    """Move the fake time on a step at a time (letting the daemon's loops run) until `check` holds."""
    deadline = time.monotonic() + 20.0
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        clock.advance(step_s)
        time.sleep(0.01)


def build_node(tmp_path: Path, *, instance_type: str = "m5.large", **env: str) -> dict[str, Any]:
    ec2 = FakeEC2()
    subnet = ec2.add_subnet("10.0.0.0/24")
    instance_id = ec2.launch_instance(instance_type, subnet)
    clock = FakeClock(waits_advance=False)  # the loops move only as far as the test moves the time
    settings = load_settings(
        {
            "VPCCNI_RUN_DIR": str(tmp_path / "run"),
            "AWS_VPC_K8S_CNI_BACKING_STORE": str(tmp_path / "ipam.json"),
            "DISABLE_INTROSPECTION": "true",
            "DISABLE_METRICS": "true",
            "WARM_IP_TARGET": "2",
            "MINIMUM_IP_TARGET": "3",
            "MY_NODE_NAME": "n1",
            **env,
        }
    )
    plan = WiringPlan.from_settings(settings)
    imds = LiveImds(ec2, instance_id)
    metadata = InstanceMetadata(imds)
    aws = AwsNode(
        metadata=metadata, identity=read_identity(metadata), ec2=ec2, tag_settings=plan.aws.tags, clock=clock
    )
    network = FakeNetwork()
    _, host = network.add_namespace("host")
    host.add_link("eth0", mac=aws.identity.primary_mac, up=True)
    # As on EC2, an ENI attached to the instance appears on the host as a link with its MAC.
    ec2.on_attach = lambda eni: host.add_link(f"eth{len(host.links())}", mac=eni["MacAddress"])
    kube = FakeKubeApi(node_name="n1")
    kube.put_node(NodeInfo(name="n1", max_pods=29))
    platform = Platform(
        connect_aws=lambda **_: aws,
        kube_api=lambda _: kube,
        open_netlink=lambda: host,
        iptables=FakeIptables,
        ip6tables=FakeIptables,
        nft=FakeNft,
        namespaces=lambda: FakeNetnsNetlink(network),
    )
    daemon = Daemon(
        settings=settings, plan=plan, platform=platform, clock=clock, started_at=clock.monotonic()
    )
    return {
        "daemon": daemon,
        "clock": clock,
        "imds": imds,
        "ec2": ec2,
        "aws": aws,
        "host": host,
        "path": tmp_path / "ipam.json",
    }


@pytest.fixture
def node(tmp_path: Path) -> Iterator[dict[str, Any]]:
    built = build_node(tmp_path)
    try:
        yield built
    finally:
        built["daemon"].stop()


def test_the_daemon_runs_on_a_fake_clock(node: dict[str, Any]) -> None:
    daemon: Daemon = node["daemon"]
    clock: FakeClock = node["clock"]
    ec2: FakeEC2 = node["ec2"]
    primary = node["aws"].identity.primary_eni_id
    started = clock.monotonic()
    daemon.start()
    assert daemon.allocator is not None and daemon.datastore is not None and daemon.pool is not None

    # Pre-scale reached the targets on the primary ENI, through the fake EC2.
    assert daemon.datastore.snapshot().total_ips == 3
    got = daemon.allocator.assign(
        network="aws-cni", container_id="c1", ifname="eth0", pod_namespace="default", pod_name="web"
    )
    assert got.eni_id == primary and got.device_number == 0

    # An address EC2 gives the ENI behind ipamd's back is found by the reconciler, which runs only after a
    # minute without pool activity: minutes of the pool loop pass on the fake clock in a moment.
    added = ec2.assign_private_ip_addresses(eni_id=primary, ip_count=1)["AssignedPrivateIpAddresses"]
    extra = IPv4Network(added[0]["PrivateIpAddress"])
    store = daemon.datastore
    run_until(
        clock,
        lambda: any(extra == c.cidr for e in store.snapshot().enis for c in e.cidrs),
        what="the reconciler to add the address EC2 assigned",
    )
    assert clock.monotonic() - started >= 60.0, "the reconciler waited for its idle minute, in fake time"

    # A release cools down for IP_COOLDOWN_PERIOD of the same clock.
    daemon.allocator.release(network="aws-cni", container_id="c1", ifname="eth0")
    assert store.snapshot().assigned_ips == 0 and sum(e.in_cooldown for e in store.snapshot().enis) == 1
    clock.advance(30)
    assert sum(e.in_cooldown for e in store.snapshot().enis) == 0

    daemon.allocator.assign(
        network="aws-cni", container_id="c2", ifname="eth0", pod_namespace="default", pod_name="api"
    )
    daemon.stop()
    restored = FileCheckpointer(node["path"]).read()
    assert restored is not None and [e.metadata.name for e in restored] == ["api"]
    assert all(isinstance(e.ip, IPv4Address) for e in restored)


def test_multi_nic_runs_a_pool_per_network_card(tmp_path: Path) -> None:
    """hpc7a.12xlarge has two network cards of two ENIs each: card 0 runs as without multi-NIC, card 1 gets
    an ENI and upstream's one warm address, and a multi-NIC pod takes an address on each card, recorded in
    each card's checkpoint file."""
    node = build_node(tmp_path, instance_type="hpc7a.12xlarge", ENABLE_MULTI_NIC="true")
    daemon: Daemon = node["daemon"]
    ec2: FakeEC2 = node["ec2"]
    try:
        daemon.start()
        assert daemon.cards is not None and [c.card for c in daemon.cards] == [0, 1]
        card0, card1 = daemon.cards[0].datastore, daemon.cards[1].datastore
        assert card0.snapshot().total_ips == 3 and len(card0.snapshot().enis) == 1
        (eni1,) = card1.snapshot().enis
        assert card1.snapshot().total_ips == 1  # WARM_IP_TARGET=1, MINIMUM_IP_TARGET=1 above card 0
        attachment = ec2.enis[eni1.eni_id]["Attachment"]
        assert (attachment["NetworkCardIndex"], attachment["DeviceIndex"]) == (1, 0)
        # The card's ENI has upstream's table on the host: 10000 + device + 100 * card.
        assert any(r.table == 10100 for r in node["host"].routes(10100))

        allocator = daemon.allocator
        assert allocator is not None and allocator.cards == (0, 1)
        taken = allocator.assign_each_card(
            network="aws-cni", container_id="c1", ifname="eth0", pod_namespace="ml", pod_name="trainer"
        )
        assert [(a.network_card, a.interface, a.route_table) for a in taken] == [(0, 0, 254), (1, 1, 10100)]
        plain = allocator.assign(
            network="aws-cni", container_id="c2", ifname="eth0", pod_namespace="ml", pod_name="web"
        )
        assert plain.network_card == 0
        on_disk = {
            name: [
                (e.key.container_id, e.metadata.interfaces_count)
                for e in FileCheckpointer(tmp_path / name).read() or ()
            ]
            for name in ("ipam.json", "ipam-nic-1.json")
        }
        assert on_disk == {"ipam.json": [("c1", 2), ("c2", 1)], "ipam-nic-1.json": [("c1", 2)]}

        # Card 1 refills its one warm address for the next multi-NIC pod.
        run_until(node["clock"], lambda: card1.snapshot().available_ips >= 1, what="card 1's warm address")
        released = allocator.release(network="aws-cni", container_id="c1", ifname="eth0")
        assert released is not None and released.ip == taken[0].ip
        assert card0.lookup(IPAMKey(network_name="aws-cni", container_id="c1", ifname="eth0")) is None
        assert card1.snapshot().assigned_ips == 0
    finally:
        daemon.stop()


def test_an_imds_outage_is_one_actionable_line_per_round_never_a_traceback(
    node: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The housekeeping round (VPC CIDRs, every 30 s) and the reconciler (after an idle minute) both read
    IMDS: while it refuses, each says so in one line and tries again; nothing is logged as a crash."""
    daemon: Daemon = node["daemon"]
    daemon.start()
    caplog.set_level(logging.INFO)
    node["imds"].down = True

    def warned(logger: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]

    run_until(
        node["clock"],
        lambda: warned("vpccni.ipamd.daemon") and warned("vpccni.ipamd.reconcile"),
        what="a housekeeping round and a reconcile while IMDS is down",
    )
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert all("check that IMDSv2 is reachable" in m for m in warned("vpccni.ipamd.daemon"))
    assert all("check that IMDSv2 is reachable" in m for m in warned("vpccni.ipamd.reconcile"))
