"""The egress addresses, kept on disk exactly as the host-local IPAM plugin keeps them.

Upstream's egress-cni gets each pod's egress address from host-local (`ipam` in its conflist entry), whose
store is a directory per network under `dataDir`: one file per reserved address, named by the address and
holding `<container id>\\r\\n<ifname>`, a `last_reserved_ip.0` file, and a `lock` file it flocks. Keeping the
same files means a node moving between upstream and vpccni (either way) sees every pod's reservation, and
never hands an address out twice.

Addresses come from the range the conflist gives (169.254.172.0/22, fd00::ac:00/118): from its second
address (the first is the gateway) to its last (before the broadcast address for IPv4), round-robin after the
last one reserved, as host-local allocates.

Thread-safe; the flock also keeps out a host-local plugin running at the same time (during an upgrade).
Who holds what is read from the directory once and then kept in memory (ipamd is the only writer once it
runs), so a look-up costs no file access.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from vpccni.networkutils.model import IPAddress, IPNetwork

log = logging.getLogger(__name__)

LINE_BREAK = "\r\n"
LAST_RESERVED = "last_reserved_ip.0"
LOCK = "lock"


class EgressAddressesExhausted(RuntimeError):
    """Every address of the egress range is reserved."""


class HostLocalStore:
    """Reservations of one network (`<data_dir>/<network>`) in one range."""

    def __init__(self, *, data_dir: str, network: str, subnet: IPNetwork) -> None:
        self.directory = os.path.join(data_dir, network)
        self.subnet = subnet
        self.gateway: IPAddress = subnet.network_address + 1
        last = subnet.broadcast_address - (1 if subnet.version == 4 else 0)
        self._first, self._last = int(self.gateway) + 1, int(last)
        self._lock = threading.RLock()
        self._index: dict[tuple[str, str], IPAddress] | None = None

    # --- queries ------------------------------------------------------------------------------------------

    def lookup(self, container_id: str, ifname: str) -> IPAddress | None:
        """The address reserved for the attachment, if any."""
        with self._lock:
            return self._find(container_id, ifname)

    def reservations(self) -> dict[IPAddress, tuple[str, str]]:
        """Every reserved address -> (container id, ifname) ("" when an old file holds only the id), read from
        the directory (and the in-memory view refreshed)."""
        with self._locked():
            self._index = None
            return {ip: key for key, ip in self._load().items()}

    # --- changes ------------------------------------------------------------------------------------------

    def reserve(self, container_id: str, ifname: str) -> IPAddress:
        """The attachment's address: the one it holds, else the next free one after the last reserved."""
        with self._locked():
            held = self._find(container_id, ifname)
            if held is not None:
                return held
            start = self._last_reserved()
            size = self._last - self._first + 1
            for step in range(1, size + 1):
                candidate = self._address(self._first + (start - self._first + step) % size)
                if self._create(candidate, container_id, ifname):
                    self._write(LAST_RESERVED, str(candidate))
                    self._load()[(container_id, ifname)] = candidate
                    return candidate
        raise EgressAddressesExhausted(
            f"all {size} egress addresses of {self.subnet} in {self.directory} are reserved: pods whose DEL "
            "never came hold them; delete the files of containers that no longer exist"
        )

    def release(self, container_id: str, ifname: str) -> IPAddress | None:
        """Free the attachment's address; returns it (None when it held none)."""
        with self._lock:
            held = self._find(container_id, ifname)
            if held is not None:
                self.release_address(held)
            return held

    def release_address(self, ip: IPAddress) -> None:
        with self._locked():
            try:
                os.unlink(os.path.join(self.directory, str(ip)))
            except FileNotFoundError:
                pass
            index = self._load()
            for key in [k for k, v in index.items() if v == ip]:
                del index[key]

    def _address(self, value: int) -> IPAddress:
        return ipaddress.IPv4Address(value) if self.subnet.version == 4 else ipaddress.IPv6Address(value)

    # --- files --------------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
            fd = os.open(os.path.join(self.directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing drops the flock

    def _entries(self) -> Iterator[tuple[IPAddress, tuple[str, str]]]:
        for entry in os.scandir(self.directory):
            try:
                ip = ipaddress.ip_address(entry.name)
            except ValueError:
                continue  # lock, last_reserved_ip.0
            try:
                with open(entry.path, encoding="utf-8", errors="replace", newline="") as f:
                    text = f.read().strip()
            except OSError:
                continue
            container_id, _, ifname = text.partition(LINE_BREAK)
            yield ip, (container_id.strip(), ifname.strip())

    def _load(self) -> dict[tuple[str, str], IPAddress]:
        if self._index is None:
            try:
                self._index = {key: ip for ip, key in self._entries()}
            except FileNotFoundError:
                self._index = {}
        return self._index

    def _find(self, container_id: str, ifname: str) -> IPAddress | None:
        index = self._load()
        # host-local before v0.9 wrote the container id alone.
        return index.get((container_id, ifname)) or index.get((container_id, ""))

    def _create(self, ip: IPAddress, container_id: str, ifname: str) -> bool:
        path = os.path.join(self.directory, str(ip))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(container_id + LINE_BREAK + ifname)
        return True

    def _last_reserved(self) -> int:
        try:
            with open(os.path.join(self.directory, LAST_RESERVED), encoding="ascii") as f:
                last = int(ipaddress.ip_address(f.read().strip()))
        except (OSError, ValueError):
            return self._last  # nothing reserved yet: start at the first address
        return last if self._first <= last <= self._last else self._last

    def _write(self, name: str, text: str) -> None:
        try:
            with open(os.path.join(self.directory, name), "w", encoding="ascii") as f:
                f.write(text)
        except OSError as exc:
            log.warning("could not record %s in %s: %s", name, self.directory, exc)
