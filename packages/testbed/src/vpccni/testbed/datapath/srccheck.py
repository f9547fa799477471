"""EC2's source/destination check and internet egress rule, as one nftables table in the VPC namespace.

EC2 drops a packet leaving an ENI whose source address is not one of that ENI's private IPs or delegated
prefixes. Here each ENI's VPC-side veth gets a chain that returns for its assigned sources and counts+drops
the rest. Unless the VPC has a NAT gateway, only addresses with a public IP (node primary IPs, as in a public
subnet) may reach the internet, so pod traffic gets there only when the node SNATs it, as on EC2.

The whole table is rendered from state and replaced in one `nft -f` transaction, so it is never half-applied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .namespaces import exec_in_netns

TABLE = "vtb_vpc"


@dataclass(frozen=True, kw_only=True)
class PortSources:
    """The sources one ENI port may send from: its private IPs and prefixes."""

    veth: str
    allowed: tuple[ipaddress.IPv4Network, ...]


def render_ruleset(
    *,
    ports: Iterable[PortSources],
    internet_link: str,
    public_ips: Iterable[ipaddress.IPv4Address],
    nat_gateway: bool = False,
) -> str:
    """The nft script that (re)creates the VPC table from scratch."""
    ports = sorted(ports, key=lambda p: p.veth)
    lines = [
        f"table ip {TABLE} {{}}",  # make the delete below valid on first use
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        "  set public {",
        "    type ipv4_addr",
    ]
    public = sorted(set(public_ips))
    if public:
        lines.append(f"    elements = {{ {', '.join(str(ip) for ip in public)} }}")
    lines += [
        "  }",
        # Before conntrack (-200): a spoofed packet never creates state.
        "  chain srccheck {",
        "    type filter hook prerouting priority -300; policy accept;",
    ]
    if ports:
        vmap = ", ".join(f'"{p.veth}" : jump {_chain(p.veth)}' for p in ports)
        lines.append(f"    iifname vmap {{ {vmap} }}")
    lines.append("  }")
    for port in ports:
        if not port.allowed:
            raise ValueError(
                f"ENI port {port.veth} has no address; an attached ENI always has its primary IP"
            )
        allowed = ", ".join(str(net) for net in sorted(set(port.allowed)))
        lines += [
            f"  chain {_chain(port.veth)} {{",
            f"    ip saddr {{ {allowed} }} return",
            "    counter drop",
            "  }",
        ]
    if nat_gateway:
        # A NAT gateway translates every other private source (upstream's AWS_VPC_K8S_CNI_EXTERNALSNAT).
        lines += [
            "  chain natgw {",
            "    type nat hook postrouting priority 100; policy accept;",
            f'    oifname "{internet_link}" ip saddr != @public masquerade',
            "  }",
        ]
    else:
        lines += [
            "  chain internet {",
            "    type filter hook forward priority 0; policy accept;",
            f'    oifname "{internet_link}" ip saddr != @public counter drop',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _chain(veth: str) -> str:
    return f"eni_{veth}"


class SourceCheck:
    """Keeps the VPC namespace's nftables table equal to the desired per-port sources."""

    def __init__(self, *, netns: str, internet_link: str, nat_gateway: bool = False) -> None:
        self._netns = netns
        self._internet_link = internet_link
        self._nat_gateway = nat_gateway

    def apply(
        self,
        *,
        ports: Mapping[str, tuple[ipaddress.IPv4Network, ...]],
        public_ips: Iterable[ipaddress.IPv4Address],
    ) -> None:
        script = render_ruleset(
            ports=[PortSources(veth=veth, allowed=allowed) for veth, allowed in ports.items()],
            internet_link=self._internet_link,
            public_ips=public_ips,
            nat_gateway=self._nat_gateway,
        )
        exec_in_netns(self._netns, ["nft", "-f", "-"], stdin=script)

    def dropped_packets(self, veth: str) -> int:
        """Packets the source check dropped on `veth` since its chain was last rewritten."""
        return counted_packets(self._netns, TABLE, _chain(veth))


def counted_packets(netns: str, table: str, chain: str) -> int:
    """The packets of the (first) counter in an nft chain."""
    out = exec_in_netns(netns, ["nft", "list", "chain", "ip", table, chain])
    for line in out.splitlines():
        words = line.split()
        if "counter" in words and "packets" in words:
            return int(words[words.index("packets") + 1])
    return 0
