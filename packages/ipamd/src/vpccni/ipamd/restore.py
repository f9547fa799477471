"""Restoring the checkpoint at start (upstream's ReadBackingStore), after node init put every ENI in the
datastore. Temporary files of writes a crash interrupted are removed first.

Entries whose pod's host veth is gone (the pod went while ipamd was down) are dropped and their leftover ip
rules released; entries whose address is on no attached ENI are dropped as stale; the rest are marked
assigned again with their original timestamps, and the file is rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vpccni.ipamd.checkpoint.file import Checkpointer
from vpccni.ipamd.checkpoint.fileformat import CheckpointEntry
from vpccni.networkutils.model import IPAddress
from vpccni.networkutils.names import HASH_LEN, host_veth_name, interface_index

if TYPE_CHECKING:
    from vpccni.ipamd.datastore.store import DataStore

_log = logging.getLogger(__name__)


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
    release_rules: Callable[[IPAddress], None],
) -> RestoreReport:
    """Re-mark checkpointed pods assigned; run after every ENI and CIDR has been added to `datastore`.

    Entries whose pod veth is gone (`host_veth_exists(entry)` false) are dropped and their leftover
    ip rules released; entries whose IP is on no ENI are dropped as stale. The file is then rewritten.
    """
    partial = checkpointer.discard_partial_writes()
    if partial:
        _log.info(
            "removed %d checkpoint files of writes a crash interrupted: %s", len(partial), ", ".join(partial)
        )
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
                entry.ip,
                entry.metadata.namespace,
                entry.metadata.name,
            )
            gone.append(entry)
            try:
                release_rules(entry.ip)
            except Exception:
                _log.exception("could not delete leftover ip rules of %s", entry.ip)
        else:
            present.append(entry)
    restored, stale = datastore.restore_assignments(present)
    for entry in stale:
        _log.warning(
            "dropping stale checkpoint entry %s of %s/%s: the address is on no attached ENI",
            entry.ip,
            entry.metadata.namespace,
            entry.metadata.name,
        )
    datastore.persist()
    return RestoreReport(restored=tuple(restored), veth_gone=tuple(gone), stale=tuple(stale))
