"""The allocation checkpoint `/var/run/aws-node/ipam.json`, byte-compatible with upstream's `vpc-cni-ipam/1`.

Written on every change before the change is acknowledged, as upstream: a temp file in the same directory,
fsync, rename. ipamd dying (kill -9, OOM) at any point leaves the old or the new file, and once the rename
is done the change survives it. The directory is not fsync'd: that only matters across a power loss or a
kernel crash, after which every pod is gone and restore drops their entries anyway, either file being valid
(it cost a second disk flush per pod, the largest part of an ADD on a busy disk).
Restored at start after the ENIs are known (`restore`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vpccni.ipamd.datastore.model import IPAMKey, PodMetadata
from vpccni.networkutils.names import HASH_LEN, host_veth_name, interface_index

if TYPE_CHECKING:
    from vpccni.ipamd.datastore.store import DataStore

_log = logging.getLogger(__name__)

CHECKPOINT_VERSION = "vpc-cni-ipam/1"
HOST_VETH_KEY = "vpccniHostVeth"


@dataclass(frozen=True, kw_only=True)
class CheckpointEntry:
    key: IPAMKey
    ipv4: IPv4Address
    allocation_timestamp_ns: int
    metadata: PodMetadata


class CheckpointError(Exception):
    """The checkpoint cannot be read; the message says which file and how to recover."""


class Checkpointer(Protocol):
    def read(self) -> tuple[CheckpointEntry, ...] | None:
        """The stored allocations, or None when there is no checkpoint yet (a fresh node)."""
        ...

    def write(self, entries: Sequence[CheckpointEntry]) -> None:
        """Replace the stored allocations atomically; raises OSError when that is impossible."""
        ...


_HEAD = b'{"version":"' + CHECKPOINT_VERSION.encode() + b'","allocations":['
_TAIL = b"]}"


def encode_entry(e: CheckpointEntry) -> bytes:
    """One allocation as upstream writes it (Go encoding/json: compact, keys in struct order)."""
    metadata: dict[str, object] = {
        "k8sPodNamespace": e.metadata.namespace,
        "k8sPodName": e.metadata.name,
        "interfacesCount": e.metadata.interfaces_count,
    }
    if e.metadata.host_veth:
        # Only where the name is not upstream's: upstream's reader ignores the extra key.
        metadata[HOST_VETH_KEY] = e.metadata.host_veth
    return json.dumps(
        {
            "networkName": e.key.network_name,
            "containerID": e.key.container_id,
            "ifName": e.key.ifname,
            "ipv4": str(e.ipv4),
            "allocationTimestamp": e.allocation_timestamp_ns,
            "metadata": metadata,
        },
        separators=(",", ":"),
    ).encode()


def encode(entries: Sequence[CheckpointEntry]) -> bytes:
    """Upstream's JSON document: `{"version":...,"allocations":[...]}`."""
    return _HEAD + b",".join(encode_entry(e) for e in entries) + _TAIL


def decode(data: bytes, *, source: str = "checkpoint") -> tuple[CheckpointEntry, ...]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{source} is not valid JSON ({exc}); move it aside to start with no recorded pods"
        ) from None
    if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise CheckpointError(
            f"{source} has version {version!r}, expected {CHECKPOINT_VERSION!r}; it was written by an "
            "incompatible release: move it aside to start with no recorded pods"
        )
    out: list[CheckpointEntry] = []
    for raw in doc.get("allocations") or []:
        entry = _decode_entry(raw)
        if entry is None:
            _log.warning("skipping checkpoint entry without a usable IPv4 address: %s", raw)
        else:
            out.append(entry)
    return tuple(out)


def _decode_entry(raw: Any) -> CheckpointEntry | None:
    if not isinstance(raw, dict) or not raw.get("ipv4"):
        return None
    try:
        ipv4 = IPv4Address(raw["ipv4"])
    except ValueError:
        return None
    meta = raw.get("metadata") or {}
    return CheckpointEntry(
        key=IPAMKey(
            network_name=str(raw.get("networkName", "")),
            container_id=str(raw.get("containerID", "")),
            ifname=str(raw.get("ifName", "")),
        ),
        ipv4=ipv4,
        allocation_timestamp_ns=int(raw.get("allocationTimestamp") or 0),
        metadata=PodMetadata(
            namespace=str(meta.get("k8sPodNamespace", "")),
            name=str(meta.get("k8sPodName", "")),
            interfaces_count=int(meta.get("interfacesCount") or 1),
            host_veth=str(meta.get(HOST_VETH_KEY) or ""),
        ),
    )


class FileCheckpointer:
    """The real checkpoint file. `rename` is the commit point (a seam for crash-safety tests)."""

    def __init__(self, path: Path | str, *, rename: Callable[[str, str], None] = os.replace) -> None:
        self._path = Path(path)
        self._rename = rename
        # Each entry's JSON by entry object: the datastore keeps one entry per assignment, so a write encodes
        # only what changed since the last one (250 entries took 0.5 ms to encode, per ADD).
        self._encoded: dict[int, tuple[CheckpointEntry, bytes]] = {}
        self._encode_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def read(self) -> tuple[CheckpointEntry, ...] | None:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return None
        return decode(data, source=str(self._path))

    def write(self, entries: Sequence[CheckpointEntry]) -> None:
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self._path.name + ".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(self._encode(entries))
                handle.flush()
                # Content on disk before the rename: after a crash the name never points at an empty file.
                os.fsync(handle.fileno())
            # Pod names and addresses: root only, as upstream's file (Go's temp files are 0600).
            os.chmod(tmp, 0o600)
            self._rename(tmp, str(self._path))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _encode(self, entries: Sequence[CheckpointEntry]) -> bytes:
        with self._encode_lock:
            known, fresh = self._encoded, {}
            parts = []
            for entry in entries:
                hit = known.get(id(entry))
                part = hit[1] if hit is not None and hit[0] is entry else encode_entry(entry)
                fresh[id(entry)] = (entry, part)  # holding the entry keeps its id from being reused
                parts.append(part)
            self._encoded = fresh
        return _HEAD + b",".join(parts) + _TAIL


def host_veth_checker(link_names: Iterable[str]) -> Callable[[CheckpointEntry], bool]:
    """Upstream's test for "the pod's veth still exists": some host link ends with sha1(ns.name)[:11], or
    with the hash of the name the entry records (`PodMetadata.host_veth`).

    Matching the suffix (not the whole name) keeps pods whose veth was made under another
    AWS_VPC_K8S_CNI_VETHPREFIX. Takes the host's link names once, so each lookup is O(1).
    """
    suffixes = {name[-HASH_LEN:] for name in link_names if len(name) > HASH_LEN}

    def exists(entry: CheckpointEntry) -> bool:
        pod = entry.metadata
        index = interface_index(entry.key.ifname)
        name = pod.host_veth or host_veth_name(pod.namespace, pod.name, index=index)
        return name[-HASH_LEN:] in suffixes

    return exists


@dataclass(frozen=True, kw_only=True)
class RestoreReport:
    restored: tuple[CheckpointEntry, ...]
    veth_gone: tuple[CheckpointEntry, ...]  # pod gone while ipamd was down: rules released
    stale: tuple[CheckpointEntry, ...]  # IP on no known ENI (or already taken)


def restore(
    datastore: DataStore,
    checkpointer: Checkpointer,
    *,
    host_veth_exists: Callable[[CheckpointEntry], bool],
    release_rules: Callable[[IPv4Address], None],
) -> RestoreReport:
    """Re-mark checkpointed pods assigned; run after every ENI and CIDR has been added to `datastore`.

    Entries whose pod veth is gone (`host_veth_exists(entry)` false) are dropped and their leftover
    ip rules released; entries whose IP is on no ENI are dropped as stale. The file is then rewritten.
    """
    entries = checkpointer.read()
    if entries is None:
        _log.info("no checkpoint: starting with no recorded pods")
        return RestoreReport(restored=(), veth_gone=(), stale=())
    present: list[CheckpointEntry] = []
    gone: list[CheckpointEntry] = []
    for entry in entries:
        # Without a pod name or a recorded veth the veth name cannot be derived (an upstream-written entry):
        # keep the entry rather than lose a live pod.
        knowable = bool(entry.metadata.name or entry.metadata.host_veth)
        if knowable and not host_veth_exists(entry):
            _log.info(
                "dropping checkpointed %s of %s/%s: its host veth is gone",
                entry.ipv4,
                entry.metadata.namespace,
                entry.metadata.name,
            )
            gone.append(entry)
            try:
                release_rules(entry.ipv4)
            except Exception:
                _log.exception("could not delete leftover ip rules of %s", entry.ipv4)
        else:
            present.append(entry)
    restored, stale = datastore.restore_assignments(present)
    for entry in stale:
        _log.warning(
            "dropping stale checkpoint entry %s of %s/%s: the address is on no attached ENI",
            entry.ipv4,
            entry.metadata.namespace,
            entry.metadata.name,
        )
    datastore.persist()
    return RestoreReport(restored=tuple(restored), veth_gone=tuple(gone), stale=tuple(stale))


class CheckpointRestorer:
    """Node init's `AllocationRestorePort`: `restore` with this node's checkpoint and host checks."""

    def __init__(
        self,
        *,
        datastore: DataStore,
        checkpointer: Checkpointer,
        host_veth_exists: Callable[[CheckpointEntry], bool],
        release_rules: Callable[[IPv4Address], None],
    ) -> None:
        self._datastore = datastore
        self._checkpointer = checkpointer
        self._host_veth_exists = host_veth_exists
        self._release_rules = release_rules
        self.last_report: RestoreReport | None = None

    def restore_allocations(self) -> int:
        self.last_report = restore(
            self._datastore,
            self._checkpointer,
            host_veth_exists=self._host_veth_exists,
            release_rules=self._release_rules,
        )
        return len(self.last_report.restored)
