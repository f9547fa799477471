"""Metrics: every upstream awscni_* metric with exact name, type and labels; observer; gauges; server."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import replace
from ipaddress import IPv4Network

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from vpccni.awsutils.observer import ApiObserver
from vpccni.ipamd.metrics import IpamdMetrics
from vpccni.ipamd.pool.snapshot import CidrSnapshot, EniSnapshot, PoolSnapshot

# docs/design/upstream-contract.md §7: name → (type, labels)
UPSTREAM = {
    "awscni_ipamd_error_count": ("counter", {"fn"}),
    "awscni_ipamd_action_inprogress": ("gauge", {"fn"}),
    "awscni_eni_max": ("gauge", set()),
    "awscni_ip_max": ("gauge", set()),
    "awscni_reconcile_count": ("counter", {"fn"}),
    "awscni_add_ip_req_count": ("counter", set()),
    "awscni_del_ip_req_count": ("counter", {"reason"}),
    "awscni_pod_eni_error_count": ("counter", {"fn"}),
    "awscni_aws_api_latency_ms": ("summary", {"api", "error", "status"}),
    "awscni_aws_api_error_count": ("counter", {"api", "error"}),
    "awscni_aws_utils_error_count": ("counter", {"fn", "error"}),
    "awscni_ec2api_req_count": ("counter", {"fn"}),
    "awscni_ec2api_error_count": ("counter", {"fn"}),
    "awscni_eni_allocated": ("gauge", set()),
    "awscni_total_ip_addresses": ("gauge", set()),
    "awscni_assigned_ip_addresses": ("gauge", set()),
    "awscni_force_removed_enis": ("counter", set()),
    "awscni_force_removed_ips": ("counter", set()),
    "awscni_total_ipv4_prefixes": ("gauge", set()),
    "awscni_assigned_ip_per_cidr": ("gauge", {"cidr"}),
    "awscni_no_available_ip_addresses": ("counter", set()),
    "awscni_assigned_ip_per_eni": ("gauge", {"eni"}),
    "awscni_ipamd_startup_duration_seconds": ("histogram", {"success", "with_api_server", "failure_reason"}),
    "awscni_ipamd_node_initialization_duration_seconds": ("histogram", {"success"}),
    "awscni_connmark_backend": ("gauge", {"backend"}),
    "awscni_connmark_reconcile_total": ("counter", {"result"}),
    "awscni_build_info": ("gauge", {"version", "goversion"}),
}


def exercised() -> IpamdMetrics:
    """Touch every labelled metric once so each exposes a sample."""
    m = IpamdMetrics(version="1.2.3", with_process_metrics=False)
    m.ipamd_error_count.labels(fn="increaseDatastorePool").inc()
    m.ipamd_action_inprogress.labels(fn="nodeInit").set(1)
    m.reconcile_count.labels(fn="eniReconcileAdd").inc()
    m.add_ip_req_count.inc()
    m.del_ip_req_count.labels(reason="PodDeleted").inc()
    m.pod_eni_error_count.labels(fn="x").inc()
    m.aws_utils_error_count.labels(fn="x", error="y").inc()
    m.on_call("AssignPrivateIpAddresses", 0.25, "RequestLimitExceeded")
    m.on_call("GetMetadata", 0.001, None)
    m.startup_duration.labels(success="true", with_api_server="true", failure_reason="").observe(3)
    m.node_init_duration.labels(success="true").observe(2)
    m.connmark_backend.labels(backend="iptables").set(1)
    m.connmark_reconcile_total.labels(result="success").inc()
    m.update_pool(
        PoolSnapshot(
            enis=(
                EniSnapshot(
                    eni_id="eni-1",
                    device_number=0,
                    cidrs=(CidrSnapshot(cidr=IPv4Network("10.0.0.16/28"), is_prefix=True, assigned=3),),
                ),
            )
        )
    )
    return m


def test_every_upstream_metric_has_its_exact_name_type_and_labels() -> None:
    text = exercised().render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (mtype, labels) in UPSTREAM.items():
        assert re.search(rf"^# TYPE {name} {mtype}$", text, re.M), name
        family = families[name.removesuffix("_total")]  # the parser strips a counter's "_total"
        sample_labels = set().union(*(set(s.labels) for s in family.samples)) - {"le", "quantile"}
        assert sample_labels == labels, name
    # Counters carry no "_total" suffix beyond upstream's own, and no "_created" series.
    assert "awscni_add_ip_req_count 1.0" in text and "_count_total" not in text and "_created" not in text


def test_observer_feeds_api_metrics_and_is_an_api_observer() -> None:
    m = exercised()
    observer: ApiObserver = m
    observer.on_throttle_wait("mutating", 1.5)
    observer.on_throttle_wait("mutating", 0.5)
    text = m.render().decode()
    assert 'awscni_ec2api_req_count{fn="AssignPrivateIpAddresses"} 1.0' in text
    assert 'awscni_ec2api_error_count{fn="AssignPrivateIpAddresses"} 1.0' in text
    assert (
        'awscni_aws_api_error_count{api="AssignPrivateIpAddresses",error="RequestLimitExceeded"} 1.0' in text
    )
    assert 'fn="GetMetadata"' not in text  # IMDS reads are not EC2 requests
    assert 'awscni_aws_api_latency_ms_sum{api="AssignPrivateIpAddresses",error="true"' in text
    assert 'vpccni_ec2_throttle_wait_seconds{category="mutating"} 2.0' in text
    assert 'vpccni_ec2_throttle_waits{category="mutating"} 2.0' in text


def test_pool_gauges_drop_labels_of_removed_cidrs_and_enis() -> None:
    m = exercised()
    assert 'awscni_assigned_ip_per_cidr{cidr="10.0.0.16/28"} 3.0' in m.render().decode()
    m.update_pool(PoolSnapshot())
    text = m.render().decode()
    assert "10.0.0.16/28" not in text and 'eni="eni-1"' not in text
    assert "awscni_eni_allocated 0.0" in text


def test_pool_gauges_sum_the_network_cards_and_keep_each_cards_labels() -> None:
    m = exercised()  # card 0: one ENI, a /28 with 3 pods
    card1 = EniSnapshot(
        eni_id="eni-9",
        device_number=0,
        cidrs=(CidrSnapshot(cidr=IPv4Network("10.1.0.5/32"), is_prefix=False, assigned=1),),
    )
    m.update_pool(PoolSnapshot(enis=(card1,)), network_card=1)
    text = m.render().decode()
    assert "awscni_eni_allocated 2.0" in text and "awscni_total_ip_addresses 17.0" in text
    assert "awscni_assigned_ip_addresses 4.0" in text
    m.update_after_pod_change(
        PoolSnapshot(enis=(replace(card1, cidrs=()),)), eni_id="eni-9", cidr=IPv4Network("10.1.0.5/32"),
        network_card=1,
    )  # fmt: skip
    assert "awscni_assigned_ip_addresses 3.0" in m.render().decode()
    m.update_pool(PoolSnapshot(), network_card=1)  # card 1's labels go, card 0's stay
    text = m.render().decode()
    assert 'eni="eni-9"' not in text and 'awscni_assigned_ip_per_eni{eni="eni-1"} 3.0' in text


def test_own_registry_not_the_global_one() -> None:
    IpamdMetrics()
    IpamdMetrics()  # a second instance does not collide
    assert REGISTRY.get_sample_value("awscni_add_ip_req_count") is None


def test_serves_metrics_over_http() -> None:
    m = exercised()
    m.start("127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://{m.address}/metrics", timeout=5) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "awscni_build_info{goversion=" in body
    finally:
        m.stop()
    assert m.address is None


def test_action_tracks_in_progress_and_errors() -> None:
    m = IpamdMetrics(with_process_metrics=False)
    with m.action("increaseDatastorePool"):
        assert 'awscni_ipamd_action_inprogress{fn="increaseDatastorePool"} 1.0' in m.render().decode()
    try:
        with m.action("increaseDatastorePool"):
            raise RuntimeError("EC2 said no")
    except RuntimeError:
        pass
    text = m.render().decode()
    assert 'awscni_ipamd_action_inprogress{fn="increaseDatastorePool"} 0.0' in text
    assert 'awscni_ipamd_error_count{fn="increaseDatastorePool"} 1.0' in text
