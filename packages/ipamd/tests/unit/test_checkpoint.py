"""The checkpoint: upstream's exact JSON, atomic writes, crash safety, restore with normalisation."""

from __future__ import annotations

import hashlib
import json
import os
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

import pytest
from vpccni.awsutils.testing import FakeClock
from vpccni.ipamd.adapters.restore import HostCheckpointRestore
from vpccni.ipamd.checkpoint.file import FileCheckpointer
from vpccni.ipamd.checkpoint.fileformat import (
    CHECKPOINT_VERSION,
    CheckpointEntry,
    CheckpointError,
    decode,
    encode,
)
from vpccni.ipamd.checkpoint.testing import MemoryCheckpointer
from vpccni.ipamd.datastore.model import NoAddressAvailable
from vpccni.ipamd.datastore.store import DataStore
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.ports import AllocationRestorePort, EniRecord
from vpccni.ipamd.restore import host_veth_checker, restore
from vpccni.networkutils.model import Rule
from vpccni.networkutils.names import attachment_veth_name, host_veth_name
from vpccni.networkutils.testing import FakeNetwork

# A file as upstream's Go ipamd writes it (compact JSON), including a legacy entry migrated from the CRI.
UPSTREAM_FILE = (
    b'{"version":"vpc-cni-ipam/1","allocations":['
    b'{"networkName":"aws-cni","containerID":"3c1f6d0a9b","ifName":"eth0","ipv4":"10.0.1.23",'
    b'"allocationTimestamp":1712345678901234567,'
    b'"metadata":{"k8sPodNamespace":"default","k8sPodName":"nginx-abc","interfacesCount":1}},'
    b'{"networkName":"_migrated-from-cri","containerID":"77aa","ifName":"unknown","ipv4":"10.0.1.24",'
    b'"allocationTimestamp":1612345678000000000,'
    b'"metadata":{"k8sPodNamespace":"kube-system","k8sPodName":"coredns-1"}}]}'
)


def entry(n: int, ip: str, *, name: str | None = None, namespace: str = "ns") -> CheckpointEntry:
    return CheckpointEntry(
        key=IPAMKey(network_name="aws-cni", container_id=f"c{n}", ifname="eth0"),
        ip=IPv4Address(ip),
        allocation_timestamp_ns=1_700_000_000_000_000_000 + n,
        metadata=PodMetadata(namespace=namespace, name=name if name is not None else f"pod-{n}"),
    )


def test_encode_is_upstream_json() -> None:
    data = encode([entry(1, "10.0.0.5")])
    assert data == (
        b'{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","containerID":"c1",'
        b'"ifName":"eth0","ipv4":"10.0.0.5","allocationTimestamp":1700000000000000001,'
        b'"metadata":{"k8sPodNamespace":"ns","k8sPodName":"pod-1","interfacesCount":1}}]}'
    )
    assert decode(data) == (entry(1, "10.0.0.5"),)


def test_encode_writes_an_ipv6_pod_as_upstream_does() -> None:
    pod = CheckpointEntry(
        key=IPAMKey(network_name="aws-cni", container_id="c6", ifname="eth0"),
        ip=IPv6Address("2001:db8:0:100:1::5"),
        allocation_timestamp_ns=1_700_000_000_000_000_006,
        metadata=PodMetadata(namespace="ns", name="pod-6"),
    )
    data = encode([pod])
    assert data == (
        b'{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni","containerID":"c6",'
        b'"ifName":"eth0","ipv6":"2001:db8:0:100:1::5","allocationTimestamp":1700000000000000006,'
        b'"metadata":{"k8sPodNamespace":"ns","k8sPodName":"pod-6","interfacesCount":1}}]}'
    )
    assert decode(data) == (pod,)


def test_decode_upstream_file_and_rejects_other_versions() -> None:
    got = decode(UPSTREAM_FILE)
    assert got[0].allocation_timestamp_ns == 1712345678901234567
    assert got[1].key == IPAMKey(network_name="_migrated-from-cri", container_id="77aa", ifname="unknown")
    assert got[1].metadata.interfaces_count == 1
    with pytest.raises(CheckpointError, match="vpc-cni-ipam/2"):
        decode(b'{"version":"vpc-cni-ipam/2","allocations":[]}')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        decode(b"{")
    # An IPv6 node's entries carry `ipv6` where an IPv4 node's carry `ipv4`; a key naming the wrong
    # family, or no address at all, is skipped, not fatal.
    v6 = b'{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"n","ipv6":"2600::1"}]}'
    assert [e.ip for e in decode(v6)] == [IPv6Address("2600::1")]
    wrong = b'{"version":"vpc-cni-ipam/1","allocations":[{"ipv4":"2600::1"},{"ipv6":"10.0.0.1"},{}]}'
    assert decode(wrong) == ()


def test_file_roundtrip_and_missing(tmp_path: Path) -> None:
    ck = FileCheckpointer(tmp_path / "sub" / "ipam.json")
    assert ck.read() is None
    ck.write([entry(1, "10.0.0.5"), entry(2, "10.0.0.6")])
    assert json.loads((tmp_path / "sub" / "ipam.json").read_text())["version"] == CHECKPOINT_VERSION
    assert ck.read() == (entry(1, "10.0.0.5"), entry(2, "10.0.0.6"))
    assert os.listdir(tmp_path / "sub") == ["ipam.json"]  # no temp files left behind


def test_crash_between_temp_write_and_rename_leaves_old_file_valid(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    FileCheckpointer(path).write([entry(1, "10.0.0.5")])
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        assert Path(src).read_bytes() == encode([entry(1, "10.0.0.5"), entry(2, "10.0.0.6")])
        raise KeyboardInterrupt("simulated crash before rename")

    with pytest.raises(KeyboardInterrupt):
        FileCheckpointer(path, rename=crash).write([entry(1, "10.0.0.5"), entry(2, "10.0.0.6")])
    assert path.read_bytes() == before
    assert FileCheckpointer(path).read() == (entry(1, "10.0.0.5"),)


def test_temp_files_of_writes_a_crash_interrupted_are_removed_at_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ipam.json"
    FileCheckpointer(path).write([entry(1, "10.0.0.5")])

    def killed(src: str, dst: str) -> None:
        raise KeyboardInterrupt("simulated kill before rename")

    with monkeypatch.context() as killed_mid_write:  # a kill -9 runs no clean-up: nothing is unlinked
        killed_mid_write.setattr(os, "unlink", lambda *args, **kwargs: None)
        for _ in range(2):
            with pytest.raises(KeyboardInterrupt):
                FileCheckpointer(path, rename=killed).write([entry(2, "10.0.0.6")])
    leftovers = sorted(p.name for p in tmp_path.glob("ipam.json.tmp*"))
    assert len(leftovers) == 2
    others = ("ipam-nic-1.json.tmpabc", "ipam.json.bak")  # another card's write; not a temp file of ours
    for name in others:
        (tmp_path / name).write_text("x")

    report = restore(_node(FileCheckpointer(path)), FileCheckpointer(path), host_veth_exists=lambda e: True,
                     release_rules=lambda ip: None)  # fmt: skip
    assert [e.ipv4 for e in report.restored] == []  # 10.0.0.5 is on no ENI of this node: stale
    assert sorted(os.listdir(tmp_path)) == sorted(["ipam.json", *others])
    assert FileCheckpointer(path).discard_partial_writes() == ()


def test_write_failure_surfaces_as_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        FileCheckpointer(blocker / "ipam.json").write([entry(1, "10.0.0.5")])


def _node(ck: MemoryCheckpointer | FileCheckpointer) -> DataStore:
    ds = DataStore(checkpointer=ck, clock=FakeClock())
    ds.add_eni(
        EniRecord(eni_id="eni-1", device_number=0, primary_ip=IPv4Address("10.0.1.10"), is_primary=True)
    )
    ds.add_cidrs("eni-1", [IPv4Network(f"10.0.1.{i}/32") for i in (23, 24, 25)], is_prefix=False)
    return ds


def test_restore_upstream_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    path.write_bytes(UPSTREAM_FILE)
    ck = FileCheckpointer(path)
    ds = _node(ck)
    released: list[IPv4Address] = []
    report = restore(ds, ck, host_veth_exists=lambda e: True, release_rules=released.append)
    assert len(report.restored) == 2 and not report.stale and not report.veth_gone and not released
    assert json.loads(path.read_bytes()) == json.loads(
        UPSTREAM_FILE.replace(b'"coredns-1"}', b'"coredns-1","interfacesCount":1}')
    )
    got = ds.lookup(IPAMKey(network_name="aws-cni", container_id="3c1f6d0a9b", ifname="eth0"))
    assert got is not None and got.ip == IPv4Address("10.0.1.23")
    assert got.assigned_at_ns == 1712345678901234567
    # The legacy entry is released by a DEL carrying the real triple.
    legacy = ds.release(IPAMKey(network_name="aws-cni", container_id="77aa", ifname="eth0"))
    assert legacy.ip == IPv4Address("10.0.1.24")
    # The only address never checkpointed is the one left to hand out.
    assert ds.assign(
        IPAMKey(network_name="aws-cni", container_id="new", ifname="eth0"), PodMetadata()
    ).ip == IPv4Address("10.0.1.25")


def test_restore_drops_gone_veths_and_stale_ips() -> None:
    ck = MemoryCheckpointer(
        encode(
            [
                entry(1, "10.0.1.23"),
                entry(2, "10.0.1.24", name="gone"),
                entry(3, "10.9.9.9"),  # on no ENI
                entry(4, "10.0.1.25", name=""),  # no pod name: cannot check, kept
            ]
        )
    )
    ds = _node(ck)
    released: list[IPv4Address] = []
    seen: list[tuple[str, str]] = []

    def veth_exists(e: CheckpointEntry) -> bool:
        seen.append((e.metadata.namespace, e.metadata.name))
        return e.metadata.name != "gone"

    report = restore(ds, ck, host_veth_exists=veth_exists, release_rules=released.append)
    assert [e.ip for e in report.veth_gone] == [IPv4Address("10.0.1.24")]
    assert released == [IPv4Address("10.0.1.24")]
    assert [e.ip for e in report.stale] == [IPv4Address("10.9.9.9")]
    assert {e.ip for e in report.restored} == {IPv4Address("10.0.1.23"), IPv4Address("10.0.1.25")}
    assert ("ns", "pod-1") in seen
    assert {e.ip for e in decode(ck.data or b"")} == {IPv4Address("10.0.1.23"), IPv4Address("10.0.1.25")}
    # The dropped address is free again (no cooldown: the pod was gone long ago).
    got = ds.assign(IPAMKey(network_name="aws-cni", container_id="x", ifname="eth0"), PodMetadata())
    assert got.ip == IPv4Address("10.0.1.24")
    with pytest.raises(NoAddressAvailable):
        ds.assign(IPAMKey(network_name="aws-cni", container_id="y", ifname="eth0"), PodMetadata())


def test_restore_into_prefix_places_exact_addresses() -> None:
    ck = MemoryCheckpointer(encode([entry(1, "10.0.2.5"), entry(2, "10.0.2.9")]))
    ds = DataStore(checkpointer=ck, prefix_delegation=True, clock=FakeClock())
    ds.add_eni(EniRecord(eni_id="eni-1", device_number=0, primary_ip=IPv4Address("10.0.1.10")))
    ds.add_cidrs("eni-1", [IPv4Network("10.0.2.0/28")], is_prefix=True)
    report = restore(ds, ck, host_veth_exists=lambda e: True, release_rules=lambda ip: None)
    assert len(report.restored) == 2
    handed = {
        ds.assign(IPAMKey(network_name="n", container_id=str(i), ifname="eth0"), PodMetadata()).ip
        for i in range(14)
    }
    assert handed == set(IPv4Network("10.0.2.0/28")) - {IPv4Address("10.0.2.5"), IPv4Address("10.0.2.9")}


def test_restore_without_file_is_a_fresh_node() -> None:
    ck = MemoryCheckpointer()
    report = restore(_node(ck), ck, host_veth_exists=lambda e: True, release_rules=lambda ip: None)
    assert report.restored == () and ck.data is None


def test_the_host_restore_checks_the_hosts_links_and_removes_a_gone_pods_rules() -> None:
    """Node init's restore port on a (fake) host: a pod whose veth is gone loses its rules and its address."""
    ck = MemoryCheckpointer(encode([entry(1, "10.0.1.23"), entry(2, "10.0.1.24"), entry(3, "10.9.9.9")]))
    ds = _node(ck)
    _, host = FakeNetwork().add_namespace("host")
    host.add_link(host_veth_name("ns", "pod-1"), mac="02:00:00:00:00:11")
    host.add_link(host_veth_name("ns", "pod-3"), mac="02:00:00:00:00:13")  # alive, its address on no ENI
    gone = IPv4Address("10.0.1.24")
    host.add_rule(Rule(priority=512, dst=IPv4Network(gone), table=254))
    restorer = HostCheckpointRestore(datastore=ds, checkpointer=ck, netlink=host)
    port: AllocationRestorePort = restorer
    assert port.restore_allocations() == 1
    report = restorer.last_report
    assert report is not None and [e.ip for e in report.veth_gone] == [gone] and len(report.stale) == 1
    assert not [r for r in host.rules() if r.dst == IPv4Network(gone)]


def test_host_veth_checker_matches_the_sha1_suffix_under_any_prefix() -> None:
    # sha1("default.nginx-abc")[:11], as upstream names the host veth
    digest = hashlib.sha1(b"default.nginx-abc").hexdigest()[:11]
    exists = host_veth_checker(["lo", "eth0", f"eni{digest}", "cali0123456789a"])
    assert exists(entry(1, "10.0.1.23", name="nginx-abc", namespace="default"))
    assert not exists(entry(1, "10.0.1.23", name="nginx-xyz", namespace="default"))
    # another AWS_VPC_K8S_CNI_VETHPREFIX
    assert host_veth_checker([f"abcd{digest}"])(entry(1, "10.0.1.23", name="nginx-abc", namespace="default"))


def test_a_recorded_host_veth_is_written_read_back_and_checked_by_its_own_name() -> None:
    own = attachment_veth_name("c2", "eth0")
    recorded = CheckpointEntry(
        key=IPAMKey(network_name="aws-cni", container_id="c2", ifname="eth0"),
        ip=IPv4Address("10.0.1.30"),
        allocation_timestamp_ns=1,
        metadata=PodMetadata(namespace="ns", name="web", host_veth=own),
    )
    plain = entry(1, "10.0.1.23")
    data = encode([plain, recorded])
    assert b"vpccniHostVeth" in data and data.count(b"vpccniHostVeth") == 1  # upstream's entries unchanged
    assert decode(data) == (plain, recorded)
    # the pod's upstream-named veth belongs to its other sandbox: this entry lives by its own name
    exists = host_veth_checker([host_veth_name("ns", "web")])
    assert not exists(recorded)
    assert host_veth_checker([own])(recorded)
    nameless = CheckpointEntry(
        key=IPAMKey(network_name="aws-cni", container_id="c3", ifname="eth0"), ip=IPv4Address("10.0.1.31"),
        allocation_timestamp_ns=1, metadata=PodMetadata(host_veth=attachment_veth_name("c3", "eth0")),
    )  # fmt: skip
    assert not host_veth_checker([host_veth_name("", "")])(nameless)
    # a second interface eth1 lives by its own index
    eth1 = CheckpointEntry(
        key=IPAMKey(network_name="aws-cni", container_id="c1", ifname="eth1"), ip=IPv4Address("10.0.1.32"),
        allocation_timestamp_ns=1, metadata=PodMetadata(namespace="ns", name="web"),
    )  # fmt: skip
    assert not exists(eth1)
    assert host_veth_checker([host_veth_name("ns", "web", index=1)])(eth1)


def test_file_writes_reuse_each_entrys_json_and_match_a_fresh_encoding(tmp_path: Path) -> None:
    import json

    ck = FileCheckpointer(tmp_path / "ipam.json")
    kept = [entry(i, f"10.0.0.{i + 1}", name="pöd-ünicode" if i == 3 else None) for i in range(5)]
    ck.write(kept)
    # Some entries go, one comes, the survivors are the same objects: their JSON is reused.
    later = [kept[0], kept[2], entry(9, "10.0.0.99"), kept[3]]
    ck.write(later)
    data = (tmp_path / "ipam.json").read_bytes()
    assert data == encode(later)
    doc = json.loads(data)
    assert data == json.dumps(doc, separators=(",", ":")).encode()  # Go-style compact, ASCII-escaped
    assert ck.read() == tuple(later)
    ck.write([])
    assert (tmp_path / "ipam.json").read_bytes() == b'{"version":"vpc-cni-ipam/1","allocations":[]}'


def test_the_file_is_readable_by_root_only_as_upstreams(tmp_path: Path) -> None:
    ck = FileCheckpointer(tmp_path / "ipam.json")
    ck.write([entry(1, "10.0.0.5")])
    assert os.stat(tmp_path / "ipam.json").st_mode & 0o777 == 0o600
