"""The branch-ENI pods ipamd has wired, keyed like the datastore's allocations (network, container,
interface), kept in the shared checkpoint (`vpccni.ipamd.checkpoint.shared`) so a restart knows them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from vpccni.ipamd.checkpoint.file import Checkpointer
from vpccni.ipamd.checkpoint.fileformat import BranchEniRecord, CheckpointEntry
from vpccni.ipamd.datastore.model import CheckpointWriteFailed
from vpccni.ipamd.introspection import pod_view
from vpccni.ipamd.podkey import IPAMKey, PodMetadata
from vpccni.ipamd.sgp.annotation import BranchEni
from vpccni.networkutils.model import IPAddress
from vpccni.networkutils.tables import route_table_for_vlan


@dataclass(frozen=True, kw_only=True)
class BranchAttachment:
    key: IPAMKey
    metadata: PodMetadata  # `host_veth` is always set: the pod's host veth as wired
    branch: BranchEni
    assigned_ns: int

    @property
    def host_veth(self) -> str:
        return self.metadata.host_veth

    @cached_property
    def entry(self) -> CheckpointEntry:
        """Made once: the checkpoint file re-encodes only entries it has not seen."""
        b = self.branch
        return CheckpointEntry(
            key=self.key,
            ip=b.ip,
            allocation_timestamp_ns=self.assigned_ns,
            metadata=self.metadata,
            branch=BranchEniRecord(eni_id=b.eni_id, mac=b.mac, vlan_id=b.vlan_id, subnet=b.subnet),
        )

    def view(self) -> dict[str, Any]:
        """Its `/v1/pods` row."""
        b = self.branch
        return pod_view(
            namespace=self.metadata.namespace, name=self.metadata.name, ip=str(b.ip), eni_id=b.eni_id,
            device_number=-1, route_table=route_table_for_vlan(b.vlan_id), assigned_ns=self.assigned_ns,
            vlan_id=b.vlan_id, mac=b.mac,
        )  # fmt: skip

    @classmethod
    def from_entry(cls, entry: CheckpointEntry) -> BranchAttachment:
        record = entry.branch
        if record is None:
            raise ValueError(f"checkpoint entry of {entry.ip} has no branch ENI")
        branch = BranchEni(
            eni_id=record.eni_id,
            mac=record.mac,
            ip=entry.ip,
            vlan_id=record.vlan_id,
            subnet=record.subnet,
        )
        return cls(
            key=entry.key, metadata=entry.metadata, branch=branch, assigned_ns=entry.allocation_timestamp_ns
        )


class BranchAttachments:
    """Thread-safe; every change is in the checkpoint before the call returns (or it is undone)."""

    def __init__(
        self,
        *,
        checkpointer: Checkpointer,
        now_ns: Callable[[], int] = time.time_ns,
        on_change: Callable[[int], None] = lambda count: None,
    ) -> None:
        self._checkpointer = checkpointer
        self._now_ns = now_ns
        self._on_change = on_change  # told the number of branch-ENI pods after each change
        self._lock = threading.Lock()
        self._by_key: dict[IPAMKey, BranchAttachment] = {}

    def load(self) -> tuple[BranchAttachment, ...]:
        """What the checkpoint records (at start, before `keep`)."""
        entries = self._checkpointer.read() or ()
        return tuple(
            BranchAttachment.from_entry(e)
            for e in entries
            if e.branch is not None and e.ip.version == e.branch.subnet.version
        )

    def keep(self, attachments: tuple[BranchAttachment, ...]) -> None:
        """Start from these (the restored ones) and rewrite the checkpoint's share."""
        with self._lock:
            self._by_key = {a.key: a for a in attachments}
            self._persist(roll_back=None)

    def add(self, *, key: IPAMKey, metadata: PodMetadata, branch: BranchEni) -> BranchAttachment:
        attachment = BranchAttachment(key=key, metadata=metadata, branch=branch, assigned_ns=self._now_ns())
        with self._lock:
            self._by_key[key] = attachment
            self._persist(roll_back=lambda: self._by_key.pop(key, None))
        return attachment

    def remove(self, key: IPAMKey) -> BranchAttachment | None:
        with self._lock:
            gone = self._by_key.pop(key, None)
            if gone is not None:
                self._persist(roll_back=lambda: self._by_key.__setitem__(key, gone))
            return gone

    def get(self, key: IPAMKey) -> BranchAttachment | None:
        with self._lock:
            return self._by_key.get(key)

    def all(self) -> tuple[BranchAttachment, ...]:
        with self._lock:
            return tuple(sorted(self._by_key.values(), key=lambda a: (a.metadata.namespace, a.metadata.name)))

    def vlan_holder(self, vlan_id: int, *, but: IPAMKey) -> BranchAttachment | None:
        """The live attachment other than `but` wired on `vlan_id` (the controller reuses VLAN ids)."""
        with self._lock:
            return next(
                (a for a in self._by_key.values() if a.branch.vlan_id == vlan_id and a.key != but), None
            )

    def address_holder(self, ip: IPAddress, *, but: IPAMKey) -> BranchAttachment | None:
        with self._lock:
            return next((a for a in self._by_key.values() if a.branch.ip == ip and a.key != but), None)

    def _persist(self, *, roll_back: Callable[[], object] | None) -> None:
        try:
            self._checkpointer.write([a.entry for a in self._by_key.values()])
            self._on_change(len(self._by_key))
        except OSError as exc:
            if roll_back is not None:
                roll_back()
            raise CheckpointWriteFailed(
                f"could not record branch-ENI pods in the checkpoint ({exc}): check free space and "
                "permissions of the backing store"
            ) from exc
