"""The `egress-cni` entry of `10-aws.conflist`, as libcni hands it to the plugin (upstream's keys).

    {"name": "aws-cni", "type": "egress-cni", "mtu": "9001", "enabled": "true", "randomizeSNAT": "prng",
     "nodeIP": "10.0.0.5", "ipam": {"type": "host-local", "ranges": [[{"subnet": "169.254.172.0/22"}]],
     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/cni/v6pd/egress-v4-ipam"},
     "pluginLogFile": "...", "pluginLogLevel": "DEBUG", "cniVersion": "0.4.0", "prevResult": {...}}

`name` is the network's (libcni writes the conflist's name into every plugin's config), so the host-local
store lives in `<dataDir>/aws-cni` as upstream's does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from vpccni.cniplugin import egress as shim_egress
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.ipamd.egress.config import V4_DATA_DIR, V4_SUBNET_TEXT, EgressConfig
from vpccni.networkutils.model import IPAddress, IPNetwork, is_global_unicast

PLUGIN_TYPE = shim_egress.PLUGIN_TYPE


def _error(msg: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"egress-cni configuration: {msg}")


@dataclass(frozen=True, kw_only=True)
class EgressNetConf:
    network: str
    enabled: bool
    node_ip: IPAddress | None
    subnet: IPNetwork
    data_dir: str
    mtu: int
    randomize_snat: str
    prev_result: dict[str, Any] | None

    @property
    def family(self) -> int:
        """What the pod gets egress to: the node IP's family (upstream: IPv6 egress when nodeIP is IPv6)."""
        return self.node_ip.version if self.node_ip is not None else self.subnet.version


def parse_egress_netconf(raw: dict[str, Any]) -> EgressNetConf:
    """The entry, its shape checked as the shim checks it (``vpccni.cniplugin.egress``), its addresses
    parsed here."""
    shim_egress.check_entry(raw)
    subnet_text = shim_egress.subnet_text(raw) or V4_SUBNET_TEXT
    try:
        subnet = ipaddress.ip_network(subnet_text, strict=False)
    except ValueError:
        raise _error(f"ipam subnet {subnet_text!r} is not a CIDR") from None
    node_ip: IPAddress | None = None
    if raw.get("nodeIP"):
        try:
            node_ip = ipaddress.ip_address(str(raw["nodeIP"]))
        except ValueError:
            raise _error(f"nodeIP {raw['nodeIP']!r} is not an IP address") from None
    ipam = raw.get("ipam") or {}
    return EgressNetConf(
        network=str(raw.get("name") or "aws-cni"),
        enabled=shim_egress.enabled(raw),
        node_ip=node_ip,
        subnet=subnet,
        data_dir=str(ipam.get("dataDir") or V4_DATA_DIR),
        mtu=int(str(raw.get("mtu") or 9001)),
        randomize_snat=str(raw.get("randomizeSNAT") or "prng"),
        prev_result=raw.get("prevResult"),
    )


def node_egress_conf(
    config: EgressConfig, *, node_ipv4: IPAddress, node_ipv6: IPAddress | None, network: str = "aws-cni"
) -> EgressNetConf | None:
    """What the node's own egress-cni entry says (the conflist is rendered from the same settings): None
    when egress is off, or IPv6 egress on a node without a global IPv6 address."""
    if not config.enabled:
        return None
    node_ip = node_ipv4 if config.family == 4 else node_ipv6
    if node_ip is None or (config.family == 6 and not is_global_unicast(node_ip)):
        return None
    return EgressNetConf(
        network=network,
        enabled=True,
        node_ip=node_ip,
        subnet=config.subnet,
        data_dir=config.data_dir,
        mtu=config.mtu,
        randomize_snat=config.randomize_snat,
        prev_result=None,
    )
