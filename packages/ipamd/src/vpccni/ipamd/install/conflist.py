"""`10-aws.conflist`, rendered from the settings as upstream's entrypoint renders `misc/10-aws.conflist`.

Shape and key order follow upstream (cniVersion 0.4.0, `disableCheck`, aws-cni, egress-cni, portmap,
optional bandwidth and tuning). Differences, each on purpose:
- the `egress-cni` entry is there only when egress is on (IPv6 cluster with ENABLE_V4_EGRESS, the default;
  IPv4 cluster with ENABLE_V6_EGRESS and a node with an IPv6 address): upstream always writes it, with
  `"enabled": "false"` when off, which makes the runtime run one more plugin per pod to pass the result on;
- `cniSocket` and `delQueueDir` are added only when VPCCNI_RUN_DIR moves them away from the shim's defaults,
  so the default file stays byte-compatible with what upstream's plugin reads (to both shims' entries).

cniVersion stays 0.4.0: containerd 1.6 (libcni 1.1) negotiates up to 1.0.0, the shim supports 0.1.0-1.1.0,
0.4.0 is the first with prevResult on DEL, and upstream reverted 1.0.0 (v1.16.2) to keep downgrades working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vpccni.cniplugin.netconf import DEFAULT_CNI_SOCKET, DEFAULT_DEL_QUEUE_DIR, POD_ANNOTATIONS_KEY
from vpccni.ipamd.egress.config import IPAM_TYPE, EgressConfig

CONFLIST_NAME = "10-aws.conflist"
CNI_VERSION = "0.4.0"
NETWORK_NAME = "aws-cni"
PLUGIN_TYPE = "aws-cni"
# Upstream's DISABLE_POD_V6 tuning entry.
POD_V6_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv6.conf.lo.disable_ipv6": "1",
}


EGRESS_TYPE = "egress-cni"


@dataclass(frozen=True, kw_only=True)
class ConflistOptions:
    veth_prefix: str = "eni"
    pod_mtu: int = 9001
    pod_sg_enforcing_mode: str = "strict"
    plugin_log_file: str = "/var/log/aws-routed-eni/plugin.log"
    plugin_log_level: str = "DEBUG"
    enable_bandwidth_plugin: bool = False
    disable_pod_v6: bool = False
    cni_socket: str = DEFAULT_CNI_SOCKET
    del_queue_dir: str = DEFAULT_DEL_QUEUE_DIR
    # Upstream's egress-cni entry (cmd/aws-vpc-cni/main.go); its nodeIP is read from IMDS when written.
    egress: EgressConfig | None = None
    egress_node_ip: str = ""


def with_node_ip(options: ConflistOptions, *, ipv4: str, ipv6: str) -> ConflistOptions:
    """The options with egress-cni's `nodeIP`: the node's IPv4 address for IPv4 egress, its IPv6 address for
    IPv6 egress. A node without an IPv6 address gets no IPv6 egress, as upstream's entrypoint decides."""
    egress = options.egress
    if egress is None or not egress.enabled:
        return options
    node_ip = ipv4 if egress.family == 4 else ipv6
    return replace(options, egress=egress if node_ip else None, egress_node_ip=node_ip)


def _egress_entry(options: ConflistOptions) -> dict[str, Any] | None:
    egress = options.egress
    if egress is None or not egress.enabled or not options.egress_node_ip:
        return None
    entry: dict[str, Any] = {
        "name": EGRESS_TYPE,
        "type": EGRESS_TYPE,
        "mtu": str(options.pod_mtu),
        "enabled": "true",
        "randomizeSNAT": egress.randomize_snat,
        "nodeIP": options.egress_node_ip,
        "ipam": {
            "type": IPAM_TYPE,
            "ranges": [[{"subnet": egress.subnet_text}]],
            "routes": [{"dst": str(egress.destination)}],
            "dataDir": egress.data_dir,
        },
        "pluginLogFile": egress.log_file,
        "pluginLogLevel": egress.log_level,
    }
    _add_shim_paths(entry, options)
    return entry


def _add_shim_paths(entry: dict[str, Any], options: ConflistOptions) -> None:
    if options.cni_socket != DEFAULT_CNI_SOCKET:
        entry["cniSocket"] = options.cni_socket
    if options.del_queue_dir != DEFAULT_DEL_QUEUE_DIR:
        entry["delQueueDir"] = options.del_queue_dir


def render_conflist(options: ConflistOptions) -> dict[str, Any]:
    aws_cni: dict[str, Any] = {
        "name": NETWORK_NAME,
        "type": PLUGIN_TYPE,
        "vethPrefix": options.veth_prefix,
        # A string, as upstream writes it; the shim (and upstream's plugin) accept a string or a number.
        "mtu": str(options.pod_mtu),
        "podSGEnforcingMode": options.pod_sg_enforcing_mode,
        "pluginLogFile": options.plugin_log_file,
        "pluginLogLevel": options.plugin_log_level,
        "capabilities": {POD_ANNOTATIONS_KEY: True},
    }
    _add_shim_paths(aws_cni, options)
    egress = _egress_entry(options)
    plugins: list[dict[str, Any]] = [
        aws_cni,
        *([egress] if egress else []),
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ]
    if options.enable_bandwidth_plugin:
        plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    if options.disable_pod_v6:
        plugins.append({"type": "tuning", "sysctl": dict(POD_V6_SYSCTLS)})
    return {"cniVersion": CNI_VERSION, "name": NETWORK_NAME, "disableCheck": True, "plugins": plugins}


def conflist_bytes(options: ConflistOptions) -> bytes:
    return (json.dumps(render_conflist(options), indent=2) + "\n").encode()


def conflist_path(confdir: str | Path) -> Path:
    return Path(confdir) / CONFLIST_NAME
