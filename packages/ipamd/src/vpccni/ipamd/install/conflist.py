"""`10-aws.conflist`, rendered from the settings as upstream's entrypoint renders `misc/10-aws.conflist`.

Shape and key order follow upstream (cniVersion 0.4.0, `disableCheck`, aws-cni then portmap, optional
bandwidth and tuning). Differences, each on purpose:
- no `egress-cni` entry: this version does not ship it (ENABLE_V6_EGRESS is rejected, no IPv6 mode);
- `cniSocket` and `delQueueDir` are added only when VPCCNI_RUN_DIR moves them away from the shim's defaults,
  so the default file stays byte-compatible with what upstream's plugin reads.

cniVersion stays 0.4.0: containerd 1.6 (libcni 1.1) negotiates up to 1.0.0, the shim supports 0.1.0-1.1.0,
0.4.0 is the first with prevResult on DEL, and upstream reverted 1.0.0 (v1.16.2) to keep downgrades working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpccni.cniplugin.netconf import DEFAULT_CNI_SOCKET, DEFAULT_DEL_QUEUE_DIR, POD_ANNOTATIONS_KEY

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
    if options.cni_socket != DEFAULT_CNI_SOCKET:
        aws_cni["cniSocket"] = options.cni_socket
    if options.del_queue_dir != DEFAULT_DEL_QUEUE_DIR:
        aws_cni["delQueueDir"] = options.del_queue_dir
    plugins: list[dict[str, Any]] = [
        aws_cni,
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
