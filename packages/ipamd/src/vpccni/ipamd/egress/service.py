"""What ipamd does for `egress-cni`, chained after `aws-cni` in `10-aws.conflist`.

ipamd renders the conflist, so it knows egress-cni follows aws-cni: with egress on in its settings it wires
a pod's egress within aws-cni's ADD and lists the two interfaces in aws-cni's result, where egress-cni's ADD
finds them in its `prevResult` and answers without calling ipamd (`vpccni.cniplugin.egress`): egress-cni
then adds its own process start to a pod's ADD and nothing else. Its other calls come here, as the same shim
under another type (same spec conformance, error codes and DEL queue):

- ADD, when aws-cni's result does not list the egress (aws-cni's ADD could not wire it, or the config
  version's results have no interfaces): an address of the egress range from the host-local store
  (`hostlocal`), a second veth whose pod end is `v4if0` (IPv4 egress of an IPv6 pod: gateway 169.254.172.1,
  default IPv4 route) or `v6if0` (IPv6 egress of an IPv4 pod, ENABLE_V6_EGRESS: IPv6 off on the pod's eth0,
  gateway fe80::1, default IPv6 route), and the host route back. The SNAT to the node's address is one
  node-wide rule (`networkutils.egress`), so an ADD runs no iptables. The result is `prevResult` with the
  two interfaces appended (no address: upstream's egress-cni adds interfaces only).
- DEL: the routes, the rule and the address go (the veth goes with the pod's namespace; without one, by
  name). Idempotent. aws-cni's DEL does the same, should egress-cni's not come (a conflist without it).
- `enabled: "false"` in the entry: ADD passes `prevResult` through (what aws-cni's ADD wired for it undone
  and its interfaces left out), DEL does nothing, as upstream.

The egress wired within aws-cni's ADD follows the node's settings, which the entry is rendered from; an entry
edited by hand to another range, MTU or data directory is honoured only where egress-cni's call comes here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from vpccni.awsutils.node import NodeIdentity
from vpccni.cniplugin import results, versions
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import parse_netconf
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.locks import KeyedLocks
from vpccni.ipamd.cni.netns_kind import NetnsKind, classify_netns
from vpccni.ipamd.egress.config import V4_IFNAME, V6_IFNAME, EgressConfig
from vpccni.ipamd.egress.hostlocal import EgressAddressesExhausted, HostLocalStore
from vpccni.ipamd.egress.netconf import PLUGIN_TYPE, EgressNetConf, node_egress_conf, parse_egress_netconf
from vpccni.networkutils.model import IPAddress, is_global_unicast
from vpccni.networkutils.names import attachment_veth_name
from vpccni.networkutils.pod import PodInterface, PodWiring, WiredPod

log = logging.getLogger(__name__)

HOST_VETH_PREFIX = "egr"


def egress_veth_name(container_id: str, ifname: str) -> str:
    """The host end of a pod's egress veth: `egr` + 11 hex digits of the attachment."""
    return attachment_veth_name(container_id, f"egress/{ifname}", prefix=HOST_VETH_PREFIX)


@dataclass(frozen=True, kw_only=True)
class _Wired:
    ip: IPAddress
    spec: PodInterface
    pod: WiredPod


class EgressService:
    """Handles requests whose config `type` is `egress-cni`, and wires the egress of aws-cni's ADDs when
    `node_conf` (egress on in the settings); safe to call from many threads."""

    def __init__(
        self,
        *,
        wiring: PodWiring,
        node_conf: EgressNetConf | None = None,
        classify: Callable[[int], NetnsKind] = classify_netns,
    ) -> None:
        self._wiring = wiring
        self._node_conf = node_conf if node_conf is not None and node_conf.enabled else None
        self._classify = classify
        self._locks = KeyedLocks()
        self._stores: dict[tuple[str, str, str], HostLocalStore] = {}
        self._stores_lock = threading.Lock()

    @property
    def pod_ifnames(self) -> tuple[str, ...]:
        return (V4_IFNAME, V6_IFNAME)

    # --- dispatch ---------------------------------------------------------------------------------------

    def handle(self, request: Request, netns_fd: int | None, *, answer_by: float | None = None) -> object:
        conf = parse_egress_netconf(request.netconf)
        version = _requested_version(request)
        if request.command == "ADD":
            return self.add(request, conf, version, netns_fd)
        if request.command == "DEL":
            self.delete(request, conf, netns_fd)
        elif request.command == "CHECK":
            self.check(request, conf, netns_fd)
        elif request.command == "GC":
            self.gc(request, conf)
        return None  # STATUS: ready whenever ipamd answers

    def abandon_add(self, request: Request, netns_fd: int | None) -> None:
        try:
            self.delete(request, parse_egress_netconf(request.netconf), netns_fd, remove_veth=True)
        except CNIError as err:
            log.error("rolling back the egress ADD of %s failed: %s", request.container_id, err.msg)

    def delete_queued(self, request: Request) -> None:
        self.delete(request, parse_egress_netconf(request.netconf), None)

    # --- aws-cni's ADD and DEL ----------------------------------------------------------------------------

    def add_with_pod(self, request: Request, netns_fd: int, version: str) -> list[dict[str, Any]]:
        """aws-cni's ADD of the pod is done but for its answer: wire its egress now (on the settings'
        config) and return the interfaces to list in aws-cni's result, for egress-cni's ADD to find there.
        Nothing when egress is off, when the version's results cannot list interfaces, or when the wiring
        failed (egress-cni's own call then wires it, or reports why it cannot)."""
        conf = self._node_conf
        if conf is None or not versions.has_interfaces(version):
            return []
        conf = replace(conf, network=parse_netconf(request.netconf).name)
        try:
            wired = self._wire(request, conf, netns_fd)
        except CNIError as err:
            log.warning("egress of %s not wired with aws-cni's ADD: %s", request.container_id, err.msg)
            return []
        log.info("egress ADD %s (%s): %s on %s, with aws-cni's", request.container_id, request.ifname,
                 wired.ip, wired.spec.ifname)  # fmt: skip
        return _interfaces(wired, request.netns_path)

    def forget(self, request: Request, netns_fd: int | None, *, remove_veth: bool = False) -> None:
        """aws-cni's DEL (or its rollback): the pod's egress goes too, should egress-cni's DEL not come (a
        conflist without it)."""
        if self._node_conf is None:
            return
        conf = replace(self._node_conf, network=parse_netconf(request.netconf).name)
        try:
            self.delete(request, conf, netns_fd, remove_veth=remove_veth)
        except CNIError as err:
            log.warning("egress of %s not removed with aws-cni's DEL: %s", request.container_id, err.msg)

    # --- commands ---------------------------------------------------------------------------------------

    def add(
        self, request: Request, conf: EgressNetConf, version: str, netns_fd: int | None
    ) -> dict[str, Any]:
        if conf.prev_result is None:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                "egress-cni must be chained after aws-cni in 10-aws.conflist: it got no prevResult",
            )
        current = results.to_current(conf.prev_result, request.netconf.get("cniVersion"))
        listed = _egress_interfaces(current)
        if listed and not conf.enabled and self._node_conf is not None:
            # Wired with aws-cni's ADD: undone, the veth too (the pod lives on without it).
            self.delete(request, replace(self._node_conf, network=conf.network), netns_fd, remove_veth=True)
        if listed and not conf.enabled:
            current["interfaces"] = [i for i in current["interfaces"] if i not in listed]
        if not conf.enabled or listed:
            return results.convert(current, version)
        if conf.family == 6 and (conf.node_ip is None or not is_global_unicast(conf.node_ip)):
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                "IPv6 egress needs the node's global IPv6 address as nodeIP: the primary ENI has none "
                "(assign one, or set ENABLE_V6_EGRESS=false)",
            )
        wired = self._wire(request, conf, self._need_netns(netns_fd))
        current["interfaces"] = [*(current.get("interfaces") or []), *_interfaces(wired, request.netns_path)]
        log.info("egress ADD %s (%s): %s on %s", request.container_id, request.ifname, wired.ip,
                 wired.spec.ifname)  # fmt: skip
        return results.convert(current, version)

    def _wire(self, request: Request, conf: EgressNetConf, fd: int) -> _Wired:
        store = self._store(conf)
        with self._locks.hold((request.container_id, request.ifname)):
            try:
                ip = store.reserve(request.container_id, request.ifname)
            except (EgressAddressesExhausted, OSError) as exc:
                raise CNIError(ErrorCode.INTERNAL, f"no egress address for the pod: {exc}") from None
            spec = self._spec(request, conf, store, ip)
            try:
                if conf.family == 6:  # the pod's IPv6 goes out through v6if0 only, as upstream
                    self._wiring.set_pod_sysctl(fd, f"net/ipv6/conf/{request.ifname}/disable_ipv6", "1")
                pod = self._wiring.wire(fd, spec)
            except Exception as exc:
                log.warning("egress wiring of %s failed, rolling back: %s", request.container_id, exc)
                self._unwire_quietly(spec, fd)
                store.release(request.container_id, request.ifname)
                raise CNIError(ErrorCode.INTERNAL, f"failed to set up egress for the pod: {exc}") from None
        return _Wired(ip=ip, spec=spec, pod=pod)

    def delete(
        self, request: Request, conf: EgressNetConf, netns_fd: int | None, *, remove_veth: bool = False
    ) -> None:
        if not conf.enabled:
            return
        store = self._store(conf)
        with self._locks.hold((request.container_id, request.ifname)):
            try:
                ip = store.lookup(request.container_id, request.ifname)
            except OSError as exc:
                raise CNIError(ErrorCode.TRY_AGAIN_LATER, f"cannot read egress addresses: {exc}") from None
            if ip is None:
                return  # never added, or deleted already
            spec = self._spec(request, conf, store, ip)
            in_pod = netns_fd is not None and self._classify(netns_fd) is NetnsKind.POD
            keep = in_pod and not remove_veth
            try:
                # aws-cni's interface of the attachment does not count as another: the chain's DEL removes
                # it next, and the namespace goes after that, taking the egress veth with it (deleting it
                # now would wait for the kernel's RCU grace periods, ~20 ms).
                self._wiring.unwire(
                    spec, netns_fd if in_pod else None, keep_veth=keep, siblings=(request.ifname,)
                )
            except Exception as exc:
                raise CNIError(ErrorCode.TRY_AGAIN_LATER, f"cannot remove the pod's egress: {exc}") from None
            store.release(request.container_id, request.ifname)
        log.info("egress DEL %s (%s): released %s", request.container_id, request.ifname, ip)

    def check(self, request: Request, conf: EgressNetConf, netns_fd: int | None) -> None:
        if not conf.enabled:
            return
        fd = self._need_netns(netns_fd)
        store = self._store(conf)
        ip = store.lookup(request.container_id, request.ifname)
        if ip is None:
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "the pod has no egress address: was ADD run?")
        problems = self._wiring.verify(fd, self._spec(request, conf, store, ip))
        if problems:
            raise CNIError(ErrorCode.INTERNAL, "egress of the pod is not as set up: " + "; ".join(problems))

    def gc(self, request: Request, conf: EgressNetConf) -> None:
        """Release the egress addresses of attachments the runtime no longer has (CNI 1.1 GC)."""
        valid = parse_netconf(request.netconf).valid_attachments
        if not conf.enabled or valid is None:
            return
        keep = set(valid)
        store = self._store(conf)
        for ip, (container_id, ifname) in store.reservations().items():
            if (container_id, ifname) not in keep and not any(c == container_id for c, _ in keep):
                log.info("egress GC: releasing %s of container %s (%s)", ip, container_id, ifname)
                store.release_address(ip)

    # --- helpers ----------------------------------------------------------------------------------------

    def _store(self, conf: EgressNetConf) -> HostLocalStore:
        key = (conf.data_dir, conf.network, str(conf.subnet))
        with self._stores_lock:
            store = self._stores.get(key)
            if store is None:
                store = HostLocalStore(data_dir=conf.data_dir, network=conf.network, subnet=conf.subnet)
                self._stores[key] = store
            return store

    @staticmethod
    def _spec(request: Request, conf: EgressNetConf, store: HostLocalStore, ip: IPAddress) -> PodInterface:
        v4 = ip.version == 4
        return PodInterface(
            host_veth=egress_veth_name(request.container_id, request.ifname),
            ip=ip,
            ifname=V4_IFNAME if v4 else V6_IFNAME,
            mtu=conf.mtu,
            gateway_ip=store.gateway if v4 else None,  # IPv6: fe80::1, as the pod's own interface
        )

    def _need_netns(self, netns_fd: int | None) -> int:
        if netns_fd is None or self._classify(netns_fd) is not NetnsKind.POD:
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                "egress-cni needs the pod's network namespace (CNI_NETNS), not the host's or another file",
            )
        return netns_fd

    def _unwire_quietly(self, spec: PodInterface, fd: int) -> None:
        try:
            self._wiring.unwire(spec, fd)
        except Exception as exc:
            log.error("egress rollback: unwiring %s failed: %s", spec.host_veth, exc)


def _interfaces(wired: _Wired, netns_path: str) -> list[dict[str, Any]]:
    """The result's entries of an egress veth: its host end, then its pod end (upstream's order)."""
    return [
        {"name": wired.pod.host_veth, "mac": wired.pod.host_mac},
        {"name": wired.spec.ifname, "mac": wired.pod.container_mac, "sandbox": netns_path},
    ]


def _egress_interfaces(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of an egress veth listed in a result: a pod end named `v4if0` or `v6if0` and the host
    end listed before it."""
    interfaces = result.get("interfaces") or []
    for i, entry in enumerate(interfaces):
        if isinstance(entry, dict) and entry.get("name") in (V4_IFNAME, V6_IFNAME) and entry.get("sandbox"):
            return interfaces[max(0, i - 1) : i + 1]
    return []


def _requested_version(request: Request) -> str:
    version = versions.canonical(request.cni_version or versions.LATEST)
    if version not in versions.SUPPORTED_VERSIONS:
        raise CNIError(ErrorCode.INCOMPATIBLE_CNI_VERSION, f"CNI version {version} is not supported")
    return version


def egress_plugins(config: EgressConfig, wiring: PodWiring, ident: NodeIdentity) -> dict[str, EgressService]:
    """The chained plugins ipamd serves beside aws-cni: egress-cni, the same shim under another type, served
    whether egress is enabled or not (its conflist entry decides whether the runtime calls it)."""
    node_conf = node_egress_conf(config, node_ipv4=ident.primary_ipv4, node_ipv6=ident.primary_ipv6)
    return {PLUGIN_TYPE: EgressService(wiring=wiring, node_conf=node_conf)}
