"""Upstream-compatible interface names and MAC addresses for pod wiring."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Collection

DEFAULT_VETH_PREFIX = "eni"
# Branch-ENI pods in strict mode: a prefix no SNAT/connmark rule (`eni+`) or Calico matches (upstream).
STRICT_BRANCH_VETH_PREFIX = "vlan"
VLAN_LINK_PREFIX = "vlan.eth."
MAX_PREFIX_LEN = 4
HASH_LEN = 11
MULTI_NIC_IFNAME_PREFIX = "mNicIf"


def host_veth_name(namespace: str, pod: str, *, index: int = 0, prefix: str = DEFAULT_VETH_PREFIX) -> str:
    """`<prefix><sha1("<namespace>.<pod>")[:11]>`; for interface index i>0 the pod name is `<pod>.<i>`.

    Calico, the network policy agent and the checkpoint all match on this name, so it must equal upstream's.
    """
    name = pod if index == 0 else f"{pod}.{index}"
    return _hashed_name(prefix, f"{namespace}.{name}")


def vlan_link_name(vlan_id: int) -> str:
    """`vlan.eth.<id>`: the host's VLAN link of a branch ENI (upstream's name; tools match on it)."""
    return f"{VLAN_LINK_PREFIX}{vlan_id}"


def vlan_id_of_link(name: str) -> int | None:
    """The VLAN id in a `vlan.eth.<id>` name, None for any other name."""
    rest = name.removeprefix(VLAN_LINK_PREFIX)
    if rest == name or not rest.isdigit() or rest != str(int(rest)):
        return None
    return int(rest)


def interface_index(ifname: str) -> int:
    """The pod interface's index: N for `eth<N>`, 0 for any other name.

    Index 0 owns the pod's main table and default route; `eth1`, `eth2`... get their own gateway
    169.254.1.(N+1), pod table N and host veth name, as upstream numbers a multi-NIC pod's interfaces.
    So a second interface never takes the first one's default route, gateway or veth name.
    """
    if ifname.startswith("eth") and ifname[3:].isdigit() and ifname[3:] == str(int(ifname[3:])):
        return int(ifname[3:])
    return 0


def multi_nic_ifname(first: str, index: int) -> str:
    """A multi-NIC pod's interface `index` inside the pod: CNI_IFNAME (`eth0`) for 0, then upstream's
    `mNicIf1`, `mNicIf2`... (an upstream plugin's DEL after a downgrade finds them by these names)."""
    return first if index == 0 else f"{MULTI_NIC_IFNAME_PREFIX}{index}"


def attachment_veth_name(container_id: str, ifname: str, *, prefix: str = DEFAULT_VETH_PREFIX) -> str:
    """`<prefix><sha1("<container id>/<ifname>")[:11]>`: a name of one attachment alone.

    For an attachment whose upstream name another live attachment holds (a second interface of the pod, a
    sandbox recreated while the old one lives) and for pods without a name. Kubernetes names cannot
    contain "/", so it never equals an upstream name but by a 44-bit hash collision.
    """
    return _hashed_name(prefix, f"{container_id}/{ifname}")


def _hashed_name(prefix: str, text: str) -> str:
    if not prefix or len(prefix) > MAX_PREFIX_LEN:
        raise ValueError(
            f"veth prefix {prefix!r} must be 1-{MAX_PREFIX_LEN} characters (AWS_VPC_K8S_CNI_VETHPREFIX)"
        )
    return prefix + hashlib.sha1(text.encode()).hexdigest()[:HASH_LEN]


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
