"""ANNOTATE_POD_IP: the allocator tells the annotator, which sets `vpc.amazonaws.com/pod-ips` as upstream."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.allocator import Allocator
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.podips import POD_IPS_ANNOTATION, PodIpAnnotator
from vpccni.ipamd.pool.snapshot import PoolSnapshot
from vpccni.ipamd.pool.status import PoolStatus
from vpccni.ipamd.ports import EniRecord
from vpccni.k8sapi.model import PodInfo
from vpccni.k8sapi.testing import FakeKubeApi

NS, POD = "default", "web-1"


class Pool:
    status = PoolStatus()

    def wake(self) -> None:
        pass

    def wake_if_low(self, snapshot: PoolSnapshot) -> bool:
        return False

    def waiting(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


@pytest.fixture
def kube() -> FakeKubeApi:
    api = FakeKubeApi()
    api.start()
    api.put_pod(PodInfo(namespace=NS, name=POD, node_name="node-1"))
    return api


@pytest.fixture
def annotator(kube: FakeKubeApi) -> Iterator[PodIpAnnotator]:
    annotator = PodIpAnnotator(api=kube)
    annotator.start()
    yield annotator
    annotator.stop()


def _allocator(annotator: PodIpAnnotator) -> Allocator:
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=FakeClock(), cooldown_s=0)
    ds.add_eni(
        EniRecord(eni_id="eni-1", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_cidrs("eni-1", [IPv4Network("10.0.0.21/32"), IPv4Network("10.0.0.22/32")], is_prefix=False)
    allocator = Allocator(datastore=ds, pool=Pool(), listeners=(annotator,))
    allocator.mark_ready()
    return allocator


def _annotation(kube: FakeKubeApi) -> str | None:
    return kube.server_pods[(NS, POD)].annotations.get(POD_IPS_ANNOTATION)


def _add(allocator: Allocator, container: str) -> IPv4Address:
    return allocator.assign(
        network="aws-cni", container_id=container, ifname="eth0", pod_namespace=NS, pod_name=POD
    ).ip


def _del(allocator: Allocator, container: str) -> None:
    allocator.release(
        network="aws-cni", container_id=container, ifname="eth0", pod_namespace=NS, pod_name=POD
    )


def test_add_annotates_the_pod_and_del_clears_it(kube: FakeKubeApi, annotator: PodIpAnnotator) -> None:
    allocator = _allocator(annotator)
    ip = _add(allocator, "c1")
    assert annotator.wait_idle(5)
    assert _annotation(kube) == str(ip)
    _del(allocator, "c1")
    assert annotator.wait_idle(5)
    assert _annotation(kube) == ""  # upstream sets it to "" rather than removing it


def test_a_repeated_add_patches_nothing(kube: FakeKubeApi, annotator: PodIpAnnotator) -> None:
    allocator = _allocator(annotator)
    _add(allocator, "c1")
    assert annotator.wait_idle(5)
    patches = kube.calls.count("annotate_pod")
    _add(allocator, "c1")  # kubelet retried the ADD: same address, already annotated
    assert annotator.wait_idle(5)
    assert kube.calls.count("annotate_pod") == patches == 1


def test_del_of_an_older_sandbox_keeps_the_newer_address(
    kube: FakeKubeApi, annotator: PodIpAnnotator
) -> None:
    allocator = _allocator(annotator)
    _add(allocator, "old")
    assert annotator.wait_idle(5)
    new = _add(allocator, "new")  # the pod's sandbox was recreated before the old one's DEL
    assert annotator.wait_idle(5)
    _del(allocator, "old")
    assert annotator.wait_idle(5)
    assert _annotation(kube) == str(new)


def test_pending_add_is_annotated_once_its_checkpoint_write_succeeded(
    kube: FakeKubeApi, annotator: PodIpAnnotator
) -> None:
    allocator = _allocator(annotator)
    pending = allocator.assign_pending(
        network="aws-cni", container_id="c1", ifname="eth0", pod_namespace=NS, pod_name=POD
    )
    pending.wait_written(5)
    assert annotator.wait_idle(5)
    assert _annotation(kube) == str(pending.allocation.ip)


def test_api_server_down_never_fails_the_pod(kube: FakeKubeApi, annotator: PodIpAnnotator) -> None:
    allocator = _allocator(annotator)
    kube.set_available(False)
    ip = _add(allocator, "c1")  # the ADD does not wait for, or fail on, the API server
    assert annotator.wait_idle(5)
    assert _annotation(kube) is None and ip is not None


def test_a_pod_that_is_gone_is_skipped(kube: FakeKubeApi, annotator: PodIpAnnotator) -> None:
    allocator = _allocator(annotator)
    kube.delete_pod(NS, POD)
    _add(allocator, "c1")
    assert annotator.wait_idle(5)
    assert (NS, POD) not in kube.server_pods
