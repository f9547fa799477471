"""Find a host interface by MAC address (how upstream's init finds the primary ENI from IMDS `mac`)."""

from __future__ import annotations

from pathlib import Path

SYS_CLASS_NET = Path("/sys/class/net")


class InterfaceNotFoundError(LookupError):
    pass


def interface_by_mac(mac: str, *, sys_class_net: Path = SYS_CLASS_NET) -> str:
    """The name of the link whose address is `mac` (case-insensitive), read from sysfs."""
    wanted = mac.strip().lower()
    for link in sorted(sys_class_net.iterdir()):
        try:
            address = (link / "address").read_text().strip().lower()
        except OSError:
            continue
        if address == wanted:
            return link.name
    raise InterfaceNotFoundError(
        f"no interface has MAC {mac} (the primary ENI's MAC in IMDS): the pod must use the host network "
        "(hostNetwork: true) and IMDS must describe this instance"
    )
