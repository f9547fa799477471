"""`vpccni enis`, `pods` and `max-pods` against a real introspection server fed by a real datastore."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.cli.introspect import HttpIntrospection, IntrospectionError, eni_rows, pod_rows
from vpccni.ipamd.cli.main import CliDeps, run
from vpccni.ipamd.cli.testing import FakeEc2, FakeHost, FakeHttp, FakeIntrospection
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.introspection import (
    IntrospectionServer,
    IntrospectionSources,
    datastore_pod_views,
    pod_view,
    scrub_eni_infos,
)
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.ports import EniRecord


def _datastore() -> DataStore:
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=FakeClock())
    ds.add_eni(
        EniRecord(eni_id="eni-a", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_eni(
        EniRecord(eni_id="eni-b", device_number=1, primary_ip=IPv4Address("10.0.0.20"), is_primary=False)
    )
    ds.add_cidrs("eni-a", [IPv4Network("10.0.0.11/32"), IPv4Network("10.0.0.12/32")], is_prefix=False)
    ds.add_cidrs("eni-b", [IPv4Network("10.0.0.21/32")], is_prefix=False)
    ds.assign(
        IPAMKey(network_name="aws-cni", container_id="c1", ifname="eth0"),
        PodMetadata(namespace="default", name="web"),
    )
    return ds


def _sources(ds: DataStore) -> IntrospectionSources:
    return IntrospectionSources(
        eni_infos=lambda: {0: ds.eni_infos()},
        eni_config_name=lambda: "",
        networkutils_env=dict,
        ipamd_env=dict,
        pool_status=dict,
        pods=lambda: [
            *datastore_pod_views(ds.assigned()),
            pod_view(
                namespace="db",
                name="orders",
                ip="10.0.16.40",
                eni_id="eni-0b7",
                device_number=-1,
                route_table=107,
                assigned_ns=1,
                vlan_id=7,
                mac="0a:bb:00:00:00:07",
            ),
        ],
    )


@pytest.fixture
def server() -> Iterator[IntrospectionServer]:
    srv = IntrospectionServer(sources=_sources(_datastore()), bind_address="127.0.0.1:0")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _deps(env: dict[str, str] | None = None) -> CliDeps:
    return CliDeps(
        introspection_at=HttpIntrospection,
        host=FakeHost(env=env or {}),
        http=FakeHttp(),
        ec2_for_region=lambda region: FakeEc2(),
    )


def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), deps=_deps(env), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_enis_table_lists_each_eni_with_counts(server: IntrospectionServer) -> None:
    code, out, _ = _run("enis", "--introspection-address", server.address)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "CARD",
        "ENI",
        "DEVICE",
        "PRIMARY",
        "TABLE",
        "SUBNET",
        "CIDRS",
        "ASSIGNED",
        "TOTAL",
    ]
    eni_a = next(line for line in lines if "eni-a" in line).split()
    assert eni_a[2:5] == ["0", "yes", "254"]  # primary ENI routes through main
    assert eni_a[-2:] == ["1", "2"]
    eni_b = next(line for line in lines if "eni-b" in line).split()
    assert eni_b[2:5] == ["1", "no", "2"]
    assert eni_b[-2:] == ["0", "1"]


def test_pods_json_names_the_pod_and_its_eni(server: IntrospectionServer) -> None:
    code, out, _ = _run("pods", "--json", "--introspection-address", server.address)
    assert code == 0
    pods = json.loads(out)
    assert [(p["namespace"], p["name"], p["eni_id"], p["vlan_id"]) for p in pods] == [
        ("db", "orders", "eni-0b7", 7),
        ("default", "web", "eni-a", 0),
    ]
    assert pods[1]["ip"] in ("10.0.0.11", "10.0.0.12")


def test_pods_table_shows_branch_eni_pods_with_their_vlan(server: IntrospectionServer) -> None:
    code, out, _ = _run("pods", "--introspection-address", server.address)
    assert code == 0
    header, branch, web = out.splitlines()
    assert header.split() == ["NAMESPACE", "POD", "IP", "CARD", "ENI", "DEVICE", "TABLE", "VLAN", "ASSIGNED"]
    assert branch.split()[:8] == ["db", "orders", "10.0.16.40", "0", "eni-0b7", "-1", "107", "7"]
    assert web.split()[7] == "-"


def test_pods_of_an_ipamd_without_v1_pods_come_from_its_enis() -> None:
    ds = _datastore()
    source = FakeIntrospection(docs={"/v1/enis": {"0": ds.eni_infos()}})
    out = io.StringIO()
    code = run(
        ["pods", "--json"],
        deps=replace(_deps(), introspection_at=lambda _: source),
        out=out,
        err=io.StringIO(),
    )
    assert code == 0 and [p["name"] for p in json.loads(out.getvalue())] == ["web"]


def test_address_comes_from_introspection_bind_address(server: IntrospectionServer) -> None:
    code, out, _ = _run("enis", "--json", env={"INTROSPECTION_BIND_ADDRESS": server.address})
    assert code == 0
    assert {e["eni_id"] for e in json.loads(out)} == {"eni-a", "eni-b"}


def test_unreachable_ipamd_says_what_to_check() -> None:
    code, out, err = _run("pods", "--introspection-address", "127.0.0.1:1")
    assert code == 1 and out == ""
    assert "is aws-node running" in err


def _one_pod_on(cidr: IPv4Network | IPv6Network, **mode: bool) -> dict[str, Any]:
    """`/v1/enis` (scrubbed) of a node whose primary ENI holds `cidr` and one pod on it."""
    ds = DataStore(checkpointer=MemoryCheckpointer(), clock=FakeClock(), **mode)
    ds.add_eni(
        EniRecord(eni_id="eni-p", device_number=0, primary_ip=IPv4Address("10.0.0.10"), is_primary=True)
    )
    ds.add_cidrs("eni-p", [cidr], is_prefix=True)
    ds.assign(
        IPAMKey(network_name="n", container_id="c", ifname="eth0"), PodMetadata(namespace="a", name="b")
    )
    return {"0": scrub_eni_infos(ds.eni_infos())}


def test_rows_from_prefix_mode_count_sixteen_per_prefix() -> None:
    doc = _one_pod_on(IPv4Network("10.0.1.0/28"), prefix_delegation=True)
    (row,) = eni_rows(doc)
    assert (row.total, row.assigned, row.cidrs) == (16, 1, ("10.0.1.0/28",))
    (pod,) = pod_rows(doc)
    assert IPv4Address(pod.ip) in IPv4Network("10.0.1.0/28")


def test_rows_of_an_ipv6_node_count_every_address_of_its_80() -> None:
    doc = _one_pod_on(IPv6Network("2001:db8:0:100:1::/80"), ipv6=True)
    (row,) = eni_rows(doc)
    assert (row.total, row.assigned, row.cidrs) == (2**48, 1, ("2001:db8:0:100:1::/80",))
    (pod,) = pod_rows(doc)
    assert (pod.ip, pod.cidr) == ("2001:db8:0:100:1::", "2001:db8:0:100:1::/80")
    assert '"containerID": "c"' not in json.dumps(doc)  # scrubbed in IPv6Cidrs too


def test_http_introspection_over_a_unix_socket(tmp_path) -> None:
    ds = _datastore()
    sources = _sources(ds)
    address = f"unix:{tmp_path}/introspection.sock"
    srv = IntrospectionServer(sources=sources, bind_address=address)
    srv.start()
    try:
        assert len(pod_rows(HttpIntrospection(address).get_json("/v1/enis"))) == 1
        with pytest.raises(IntrospectionError, match="404"):
            HttpIntrospection(address).get_json("/v1/nope")
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), "29"),
        (("--custom-networking",), "20"),
        (("--prefix-delegation",), "434"),
        (("--prefix-delegation", "--cpu-cap"), "110"),
    ],
)
def test_max_pods_matches_upstream_calculator(flags: tuple[str, ...], expected: str) -> None:
    code, out, _ = _run("max-pods", "--instance-type", "m5.large", *flags)
    assert (code, out.strip()) == (0, expected)


def test_max_pods_rejects_unknown_and_non_nitro_types() -> None:
    code, _, err = _run("max-pods", "--instance-type", "m5.nonsense")
    assert code == 2 and "unknown instance type" in err
    code, _, err = _run("max-pods", "--instance-type", "m4.large", "--prefix-delegation")
    assert code == 2 and "prefix delegation" in err


def test_a_multi_nic_pod_has_a_row_per_network_card() -> None:
    key, meta = (
        IPAMKey(network_name="n", container_id="c", ifname="eth0"),
        PodMetadata(namespace="ml", name="t"),
    )
    doc = {}
    for card, primary, pod_ip in ((0, "10.0.0.10", "10.0.0.11/32"), (1, "10.0.9.10", "10.0.9.11/32")):
        ds = DataStore(checkpointer=MemoryCheckpointer(), clock=FakeClock(), network_card=card)
        ds.add_eni(EniRecord(eni_id=f"eni-{card}", device_number=0, primary_ip=IPv4Address(primary)))
        ds.add_cidrs(f"eni-{card}", [IPv4Network(pod_ip)], is_prefix=False)
        ds.assign(key, replace(meta, interfaces_count=2))
        doc[str(card)] = ds.eni_infos()
    rows = pod_rows(doc)
    assert [(r.name, r.ip, r.network_card, r.route_table) for r in rows] == [
        ("t", "10.0.0.11", 0, 254),
        ("t", "10.0.9.11", 1, 10100),
    ]
