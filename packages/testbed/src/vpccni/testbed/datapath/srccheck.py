"""EC2's source/destination check and internet egress rule, as one nftables table in the VPC namespace.

EC2 drops a packet leaving an ENI whose source address is not one of that ENI's private IPs or delegated
prefixes. Here each ENI's VPC-side veth gets a chain that returns for its assigned sources and counts+drops
the rest. Unless the VPC has a NAT gateway, only addresses with a public IP (node primary IPs, as in a public
subnet) may reach the internet, so pod traffic gets there only when the node SNATs it, as on EC2.

In a dual-stack VPC a second table (`ip6 vtb_vpc6`) does the same for IPv6: each ENI may send from its IPv6
addresses and /80 prefixes, and from link-local and unspecified sources (neighbour discovery). There is no
internet rule for IPv6: its addresses are public, as on EC2.

The whole table is rendered from state and replaced in one `nft -f` transaction, so it is never half-applied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .namespaces import exec_in_netns

TABLE = "vtb_vpc"
TABLE6 = "vtb_vpc6"
# Neighbour discovery: solicitations come from link-local addresses, or from :: during DAD.
_ND_SOURCES = (ipaddress.IPv6Network("fe80::/10"), ipaddress.IPv6Network("::/128"))


@dataclass(frozen=True, kw_only=True)
class PortSources:
    """The sources one ENI port may send from: its private IPs and prefixes."""

    veth: str
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @property
    def allowed4(self) -> list[ipaddress.IPv4Network]:
        return sorted({n for n in self.allowed if isinstance(n, ipaddress.IPv4Network)})

    @property
    def allowed6(self) -> list[ipaddress.IPv6Network]:
        return sorted({n for n in self.allowed if isinstance(n, ipaddress.IPv6Network)} | set(_ND_SOURCES))


def render_ruleset(
    *,
    ports: Iterable[PortSources],
    internet_link: str,
    public_ips: Iterable[ipaddress.IPv4Address],
    nat_gateway: bool = False,
    ipv6: bool = False,
) -> str:
    """The nft script that (re)creates the VPC table (and in a dual-stack VPC the IPv6 one) from scratch."""
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
    lines.append("  }")
    for port in ports:
        if not port.allowed4:
            raise ValueError(
                f"ENI port {port.veth} has no address; an attached ENI always has its primary IP"
            )
    lines += _port_chains(ports, {p.veth: ("ip", p.allowed4) for p in ports})
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
    if ipv6:
        lines += _render_ipv6(ports)
    return "\n".join(lines) + "\n"


def _render_ipv6(ports: list[PortSources]) -> list[str]:
    return [
        f"table ip6 {TABLE6} {{}}",
        f"delete table ip6 {TABLE6}",
        f"table ip6 {TABLE6} {{",
        *_port_chains(ports, {p.veth: ("ip6", p.allowed6) for p in ports}),
        "}",
    ]


def _port_chains(
    ports: list[PortSources],
    allowed: Mapping[str, tuple[str, Sequence[ipaddress.IPv4Network] | Sequence[ipaddress.IPv6Network]]],
) -> list[str]:
    """The prerouting chain sending each port's packets to its own chain, which passes its sources only."""
    lines = [
        # Before conntrack (-200): a spoofed packet never creates state.
        "  chain srccheck {",
        "    type filter hook prerouting priority -300; policy accept;",
    ]
    if ports:
        vmap = ", ".join(f'"{p.veth}" : jump {_chain(p.veth)}' for p in ports)
        lines.append(f"    iifname vmap {{ {vmap} }}")
    lines.append("  }")
    for port in ports:
        family, nets = allowed[port.veth]
        lines += [
            f"  chain {_chain(port.veth)} {{",
            f"    {family} saddr {{ {', '.join(str(net) for net in nets)} }} return",
            "    counter drop",
            "  }",
        ]
    return lines


def _chain(veth: str) -> str:
    return f"eni_{veth}"


class SourceCheck:
    """Keeps the VPC namespace's nftables table equal to the desired per-port sources."""

    def __init__(
        self, *, netns: str, internet_link: str, nat_gateway: bool = False, ipv6: bool = False
    ) -> None:
        self._netns = netns
        self._internet_link = internet_link
        self._nat_gateway = nat_gateway
        self._ipv6 = ipv6

    def apply(
        self,
        *,
        ports: Mapping[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]],
        public_ips: Iterable[ipaddress.IPv4Address],
    ) -> None:
        script = render_ruleset(
            ports=[PortSources(veth=veth, allowed=allowed) for veth, allowed in ports.items()],
            internet_link=self._internet_link,
            public_ips=public_ips,
            nat_gateway=self._nat_gateway,
            ipv6=self._ipv6,
        )
        exec_in_netns(self._netns, ["nft", "-f", "-"], stdin=script)

    def dropped_packets(self, veth: str, *, family: int = 4) -> int:
        """Packets the source check dropped on `veth` (of IPv4 or IPv6) since its chain was last rewritten."""
        if family == 4:
            return counted_packets(self._netns, TABLE, _chain(veth))
        return counted_packets(self._netns, TABLE6, _chain(veth), family="ip6")


def counted_packets(netns: str, table: str, chain: str, *, family: str = "ip") -> int:
    """The packets of the (first) counter in an nft chain."""
    out = exec_in_netns(netns, ["nft", "list", "chain", family, table, chain])
    for line in out.splitlines():
        words = line.split()
        if "counter" in words and "packets" in words:
            return int(words[words.index("packets") + 1])
    return 0
