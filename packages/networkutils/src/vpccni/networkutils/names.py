"""Upstream-compatible interface names and MAC addresses for pod wiring."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Collection

DEFAULT_VETH_PREFIX = "eni"
MAX_PREFIX_LEN = 4
HASH_LEN = 11


def host_veth_name(namespace: str, pod: str, *, index: int = 0, prefix: str = DEFAULT_VETH_PREFIX) -> str:
    """`<prefix><sha1("<namespace>.<pod>")[:11]>`; for interface index i>0 the pod name is `<pod>.<i>`.

    Calico, the network policy agent and the checkpoint all match on this name, so it must equal upstream's.
    """
    if not prefix or len(prefix) > MAX_PREFIX_LEN:
        raise ValueError(
            f"veth prefix {prefix!r} must be 1-{MAX_PREFIX_LEN} characters (AWS_VPC_K8S_CNI_VETHPREFIX)"
        )
    name = pod if index == 0 else f"{pod}.{index}"
    digest = hashlib.sha1(f"{namespace}.{name}".encode()).hexdigest()
    return f"{prefix}{digest[:HASH_LEN]}"


def random_local_mac(randbytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A random locally administered unicast MAC (bit 1 of the first octet set, bit 0 clear)."""
    raw = bytearray(randbytes(6))
    raw[0] = (raw[0] | 0x02) & 0xFE
    return ":".join(f"{b:02x}" for b in raw)


def unique_local_mac(
    taken: Collection[str], *, attempts: int = 10, randbytes: Callable[[int], bytes] = secrets.token_bytes
) -> str:
    """A random local MAC not in `taken` (udev's persistent MAC policy made fixed MACs collide upstream)."""
    lowered = {mac.lower() for mac in taken}
    for _ in range(attempts):
        mac = random_local_mac(randbytes)
        if mac not in lowered:
            return mac
    raise RuntimeError(
        f"no unique MAC for a host veth after {attempts} attempts; check the host's link table"
    )
