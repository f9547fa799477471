"""The node's trunk ENI: found where ipamd sets up ENIs, and asked for through the CNINode.

`TrunkTracker` wraps the node-network port every managed ENI's setup goes through (node init and the
reconciler), so the trunk is known as soon as ipamd sets it up, with its MAC, without another EC2 call.
`TrunkRequest` is upstream's tryEnableSecurityGroupsForPods: while there is no trunk, it records
`SecurityGroupsForPods` in the node's CNINode `spec.features` (how the VPC resource controller learns that
it should attach one), but only when an ENI slot is free for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.ipamd.ports import EniAddresses, EniDescription, NodeNetworkPort
from vpccni.k8sapi import CniNodeFeature, K8sApiError, KubeApi, ensure_cninode_features
from vpccni.k8sapi.names import CNINODE_FEATURE_SGP
from vpccni.networkutils.netlink import Netlink

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrunkEni:
    eni_id: str
    mac: str


class TrunkTracker:
    """`NodeNetworkPort` that remembers the trunk ENI among the ENIs set up through it."""

    def __init__(
        self, inner: NodeNetworkPort, *, netlink: Netlink, on_change: Callable[[bool], None] = lambda up: None
    ) -> None:
        self._inner = inner
        self._netlink = netlink
        self._on_change = on_change  # told whether a trunk is set up, on each change
        self._lock = threading.Lock()
        self._trunk: TrunkEni | None = None
        self._link = ""  # the trunk's link name, once looked up

    @property
    def trunk(self) -> TrunkEni | None:
        with self._lock:
            return self._trunk

    def setup_eni(self, eni: EniAddresses) -> None:
        self._inner.setup_eni(eni)
        if isinstance(eni, EniDescription) and eni.is_trunk:
            with self._lock:
                if self._trunk is None or self._trunk.eni_id != eni.eni_id:
                    log.info("trunk ENI %s (%s) is set up: branch-ENI pods can be wired", eni.eni_id, eni.mac)
                    self._trunk, self._link = TrunkEni(eni_id=eni.eni_id, mac=eni.mac.lower()), ""
            self._on_change(True)

    def teardown_eni(self, *, eni_id: str, device_number: int, primary_ip: IPv4Address | None) -> None:
        self._inner.teardown_eni(eni_id=eni_id, device_number=device_number, primary_ip=primary_ip)
        with self._lock:
            if self._trunk is not None and self._trunk.eni_id == eni_id:
                log.warning("trunk ENI %s is gone from the node", eni_id)
                self._trunk, self._link = None, ""
                self._on_change(False)

    def link_name(self) -> str | None:
        """The trunk's link on the host (by MAC; the name is re-checked, not the whole link list)."""
        with self._lock:
            trunk, cached = self._trunk, self._link
        if trunk is None:
            return None
        if cached:
            link = self._netlink.link(cached)
            if link is not None and link.mac == trunk.mac:
                return cached
        found = next((link.name for link in self._netlink.links() if link.mac == trunk.mac), None)
        with self._lock:
            if self._trunk == trunk:
                self._link = found or ""
        return found


class TrunkRequest:
    """Advertises SecurityGroupsForPods until a trunk shows up, from `start()` to `stop()`."""

    def __init__(
        self,
        *,
        tracker: TrunkTracker,
        api: Callable[[], KubeApi | None],
        eni_count: Callable[[], int],
        max_enis: int,
        on_error: Callable[[str], None] = lambda fn: None,
        clock: Clock | None = None,
        interval_s: float = 5.0,
    ) -> None:
        self._tracker = tracker
        self._api = api
        self._eni_count = eni_count
        self._max_enis = max_enis  # ENIs ipamd may hold on card 0 (unmanaged ones already taken off)
        self._on_error = on_error  # awscni_pod_eni_error_count{fn}
        self._clock: Clock = clock or SystemClock()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._advertised = False
        self._said_no_slot = False

    def step(self) -> bool:
        """One attempt; True once the node has its trunk."""
        if self._tracker.trunk is not None:
            return True
        if self._eni_count() >= self._max_enis:
            if not self._said_no_slot:
                self._said_no_slot = True
                log.error(
                    "no ENI slot is free for a trunk ENI (%d of %d in use): branch-ENI pods cannot run on "
                    "this node; raise MAX_ENI, lower WARM_ENI_TARGET, or use a larger instance type",
                    self._eni_count(),
                    self._max_enis,
                )
            return False
        api = self._api()
        if api is None:
            return False
        try:  # every time while there is no trunk, as upstream: someone may have rewritten the CNINode
            ensure_cninode_features(api, [CniNodeFeature(name=CNINODE_FEATURE_SGP)])
        except K8sApiError as err:
            self._on_error("tryEnableSecurityGroupsForPods")
            log.warning("could not record %s in this node's CNINode: %s", CNINODE_FEATURE_SGP, err)
            return False
        if not self._advertised:
            self._advertised = True
            log.info("recorded %s in this node's CNINode: waiting for the trunk ENI", CNINODE_FEATURE_SGP)
        return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sgp-trunk", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.step():
                    self._advertised = False
            except Exception:
                log.exception("asking for a trunk ENI failed; retrying")
            if self._clock.wait(self._stop, self._interval_s):
                return
