"""The CNI spec's allocation key and the pod metadata recorded with it.

Shared by the datastore, the checkpoint file format and the CNI service, and owned by none of them (so the
checkpoint never imports the datastore).
"""

from __future__ import annotations

from dataclasses import dataclass

# Key upstream gave allocations it migrated from the CRI (≤ v1.7); DEL falls back to it.
LEGACY_NETWORK_NAME = "_migrated-from-cri"
LEGACY_IFNAME = "unknown"


@dataclass(frozen=True, kw_only=True)
class IPAMKey:
    """The CNI spec's allocation key: (network name, container id, interface name)."""

    network_name: str
    container_id: str
    ifname: str

    def legacy(self) -> IPAMKey:
        return IPAMKey(network_name=LEGACY_NETWORK_NAME, container_id=self.container_id, ifname=LEGACY_IFNAME)


@dataclass(frozen=True, kw_only=True)
class PodMetadata:
    namespace: str = ""
    name: str = ""
    interfaces_count: int = 1
    # The host veth's name when it is not upstream's (`networkutils.names.attachment_veth_name`): set for
    # pods without a name and for an attachment whose upstream name another live attachment holds.
    host_veth: str = ""
